"""Training hyperparameters of one stage (``TrainConfig``) and how a global batch is split over devices.

A ``TrainConfig`` is built from a protocol stage block of ``params.yaml`` (``protocols.<name>.stage1``),
validated by ``llava_more.config``, plus the run-level knobs a protocol does not fix (seed, a step
limit for smoke runs, data-loader workers, LoRA). The global batch is part of the recipe and must not
change with the hardware, so ``split_batch`` derives per-device batch and gradient accumulation from
the number of devices at launch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from llava_more.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train_stage`` needs besides paths. Field names follow ``params.yaml``."""

    epochs: float = 1.0
    global_batch: int = 32
    per_device_batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    max_length: int = 2048
    precision: str = "fp32"  # bf16 | fp16 | fp32; only honoured on a GPU
    tf32: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str = "none"  # none | zero2 | zero3
    image_aspect_ratio: str = "square"  # square | pad
    group_by_length: bool = False
    save_every_steps: int = 200
    packing: bool = False  # padding-free rows (train/packing.py) instead of padded micro-batches
    pack_tokens: int = 0  # tokens per packed row; 0: one row per micro-batch
    # packed runs: micro-batches of a variable number of samples within this many tokens per device
    # (train/sampler.py TokenBudgetBatches); 0: per_device_batch samples per micro-batch
    micro_tokens: int = 0
    # LM head and cross-entropy in one chunked pass (train/fused_loss.py): never holds the full logits
    fused_loss: bool = False
    # Run-level knobs (not part of a protocol).
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, tests)
    num_workers: int = 0
    keep_checkpoints: int = 2  # complete checkpoints kept in the work dir
    logging_steps: int = 1
    max_grad_norm: float = 1.0
    # LoRA (stage 2 only): 0 trains the full LLM.
    lora_r: int = 0
    lora_alpha: int | None = None  # default 2 * lora_r, as LLaVA-1.5's LoRA scripts
    lora_dropout: float = 0.05

    CHOICES = {
        "precision": ("bf16", "fp16", "fp32"),
        "deepspeed": ("none", "zero2", "zero3"),
        "image_aspect_ratio": ("square", "pad"),
        "scheduler": ("cosine", "linear", "constant_with_warmup"),
    }

    def __post_init__(self) -> None:
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"train config: {name}={getattr(self, name)!r} is not one of {', '.join(choices)}"
                )
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"train config: max_steps must be positive, got {self.max_steps}")
        if self.save_every_steps <= 0 or self.keep_checkpoints <= 0:
            raise ConfigError("train config: save_every_steps and keep_checkpoints must be positive")
        if self.pack_tokens < 0:
            raise ConfigError(f"train config: pack_tokens must be >= 0, got {self.pack_tokens}")
        if self.micro_tokens:
            if not self.packing:
                raise ConfigError(
                    f"train config: micro_tokens={self.micro_tokens} needs packing: true (a token budget "
                    "fills packed rows; padded micro-batches use per_device_batch)"
                )
            if self.micro_tokens < self.max_length:
                raise ConfigError(
                    f"train config: micro_tokens ({self.micro_tokens}) must be at least max_length "
                    f"({self.max_length}), or the longest samples fit no micro-batch"
                )
        if self.lora_r < 0:
            raise ConfigError(f"train config: lora_r must be >= 0, got {self.lora_r}")

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    @classmethod
    def from_protocol(cls, stage_block: Any, **run_options: Any) -> TrainConfig:
        """Build from a ``StageProtocol`` (``llava_more.config``) or a raw stage mapping of ``params.yaml``.

        ``run_options`` set the run-level fields (``seed``, ``max_steps``, ``num_workers``, LoRA...);
        ``None`` values are ignored so CLI defaults do not override the protocol.
        """
        if isinstance(stage_block, Mapping):
            from llava_more.config import StageProtocol

            stage_block = StageProtocol.parse(dict(stage_block), "protocol stage")
        values = stage_block.as_dict() if hasattr(stage_block, "as_dict") else dataclasses.asdict(stage_block)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for key, value in run_options.items():
            if key not in known:
                raise ConfigError(f"train config: unknown option {key!r}")
            if value is not None:
                values[key] = value
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


class BatchSplit(NamedTuple):
    """How the global batch is formed: ``per_device * grad_accum * world_size == global_batch``."""

    per_device: int
    grad_accum: int

    def describe(self, global_batch: int, world_size: int) -> str:
        return (
            f"global batch {global_batch} = {self.per_device} per device x {self.grad_accum} accumulation "
            f"step(s) x {world_size} device(s)"
        )


def split_batch(global_batch: int, per_device_batch: int, world_size: int) -> BatchSplit:
    """Split ``global_batch`` over ``world_size`` devices without changing it.

    Uses the largest per-device batch that is at most ``per_device_batch`` and divides the share of
    each device; the rest is gradient accumulation. Raises ``ConfigError`` when the global batch
    cannot be shared evenly by the devices.
    """
    if global_batch <= 0 or per_device_batch <= 0 or world_size <= 0:
        raise ConfigError(
            f"batch split: global_batch ({global_batch}), per_device_batch ({per_device_batch}) and the "
            f"device count ({world_size}) must be positive"
        )
    if global_batch % world_size:
        fits = [n for n in range(1, min(global_batch, 64) + 1) if global_batch % n == 0]
        raise ConfigError(
            f"global batch {global_batch} cannot be split evenly over {world_size} devices; run on a device "
            f"count that divides it ({', '.join(map(str, fits))}) or change the protocol's global_batch"
        )
    per_rank = global_batch // world_size
    per_device = max(d for d in range(1, min(per_device_batch, per_rank) + 1) if per_rank % d == 0)
    return BatchSplit(per_device, per_rank // per_device)
