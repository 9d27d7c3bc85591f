"""The stage recipe: the hyperparameters of one training stage (``protocols.<name>.stage1|stage2``).

This is the one definition of a stage's recipe and of every rule it must obey; ``check-params``,
the Snakefile and ``llava-more train`` all validate through ``StageRecipe.parse``, so a recipe the
trainer would reject never gets past ``check-params``. The trainer's configuration
(``llava_more.train.config.TrainConfig``) is this recipe plus the options of one run.

Fields fall in two kinds:

- result fields decide what a stage computes (samples, order, gradient, schedule); changing one
  retrains the stage and everything downstream of it;
- ``LAYOUT_FIELDS`` decide only how a step is computed (how its samples are split into micro-batches
  or packed rows, whether the LM head and the loss run fused, how often a checkpoint is written).
  The step's samples and its gradient are the same whatever their values (up to floating-point
  reduction order; tested in ``tests/test_train_packing.py``, ``test_train_fused_loss.py`` and
  ``test_train_resume.py``), so editing them reruns nothing (``config.lineage``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from llava_more.config.checks import check_keys, choice, typed, where
from llava_more.errors import ConfigError

# How a step is computed, not what: excluded from what decides whether a stage reruns.
LAYOUT_FIELDS = (
    "per_device_batch",
    "packing",
    "pack_tokens",
    "micro_tokens",
    "fused_loss",
    "save_every_steps",
)


@dataclass(frozen=True)
class StageRecipe:
    """One stage's hyperparameters. The defaults are those of optional keys, or of a recipe built in code.

    ``parse`` validates; a recipe built in code is validated where it is used (``TrainConfig``).
    """

    epochs: float = 1.0
    global_batch: int = 32
    per_device_batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    max_length: int = 2048
    precision: str = "fp32"  # bf16 | fp16 | fp32; mixed precision only where a GPU is
    tf32: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str = "none"  # none | zero2 | zero3
    image_aspect_ratio: str = "square"  # square | pad
    group_by_length: bool = False
    save_every_steps: int = 200
    max_grad_norm: float = 1.0
    # Stage 2 with LoRA instead of the full LLM (0: full training); alpha defaults to 2 * r, as
    # LLaVA-1.5's LoRA scripts.
    lora_r: int = 0
    lora_alpha: int = 0
    lora_dropout: float = 0.05
    # Padding-free rows (train/packing.py) instead of padded micro-batches; pack_tokens: tokens per
    # packed row (0: one row per micro-batch).
    packing: bool = False
    pack_tokens: int = 0
    # Packed runs: micro-batches of a variable number of samples within this many tokens per device
    # (train/sampler.py TokenBudgetBatches); 0: per_device_batch samples per micro-batch.
    micro_tokens: int = 0
    # The LM head and the cross-entropy in one chunked pass (train/fused_loss.py).
    fused_loss: bool = False

    # Keys params.yaml must give for every stage; the others take the defaults above.
    REQUIRED = (
        "epochs", "global_batch", "per_device_batch", "lr", "weight_decay", "warmup_ratio", "scheduler",
        "max_length", "precision", "tf32", "gradient_checkpointing", "deepspeed", "image_aspect_ratio",
        "group_by_length", "save_every_steps",
    )  # fmt: skip
    CHOICES = {
        "scheduler": ("cosine", "linear", "constant_with_warmup"),
        "precision": ("bf16", "fp16", "fp32"),
        "deepspeed": ("none", "zero2", "zero3"),
        "image_aspect_ratio": ("square", "pad"),
    }

    @classmethod
    def parse(cls, raw: Any, path: str) -> StageRecipe:
        """A recipe from a ``params.yaml`` stage mapping; ``ConfigError`` naming ``path.key`` otherwise."""
        names = tuple(f.name for f in fields(cls))
        raw = check_keys(raw, path, names, cls.REQUIRED)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            at = where(path, f.name)
            value = raw[f.name]
            if f.name in cls.CHOICES:
                values[f.name] = choice(value, cls.CHOICES[f.name], at)
            else:
                values[f.name] = typed(value, {"bool": bool, "int": int, "float": float}[f.type], at)
        recipe = cls(**values)
        recipe.validate(path)
        return recipe

    def validate(self, path: str) -> None:
        """Every rule a recipe must obey, with ``path`` (its place in params.yaml) in the message."""
        for name, choices in self.CHOICES.items():
            choice(getattr(self, name), choices, where(path, name))
        if self.global_batch <= 0 or self.per_device_batch <= 0:
            raise ConfigError(f"{path}: global_batch and per_device_batch must be positive")
        if self.global_batch % self.per_device_batch:
            raise ConfigError(
                f"{path}: global_batch {self.global_batch} is not a multiple of per_device_batch "
                f"{self.per_device_batch}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"{where(path, 'warmup_ratio')}: must be in [0, 1)")
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError(f"{path}: lr and epochs must be positive")
        if self.max_length <= 0:
            raise ConfigError(f"{where(path, 'max_length')}: must be positive")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"{path}: weight_decay and max_grad_norm must be >= 0")
        if self.save_every_steps <= 0:
            raise ConfigError(f"{where(path, 'save_every_steps')}: must be positive")
        for name in ("lora_r", "lora_alpha", "pack_tokens", "micro_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where(path, name)}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{where(path, 'lora_dropout')}: must be in [0, 1)")
        if self.pack_tokens and not self.packing:
            raise ConfigError(f"{where(path, 'pack_tokens')}: needs packing: true")
        if self.pack_tokens and self.pack_tokens < self.max_length:
            raise ConfigError(
                f"{where(path, 'pack_tokens')}: {self.pack_tokens} is below max_length ({self.max_length}), "
                "so the longest samples fit no packed row"
            )
        if self.micro_tokens:
            if not self.packing:
                raise ConfigError(
                    f"{where(path, 'micro_tokens')}: {self.micro_tokens} needs packing: true (a token budget "
                    "fills packed rows; padded micro-batches use per_device_batch)"
                )
            if self.micro_tokens < self.max_length:
                raise ConfigError(
                    f"{where(path, 'micro_tokens')}: {self.micro_tokens} must be at least max_length "
                    f"({self.max_length}), or the longest samples fit no micro-batch"
                )

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha or 2 * self.lora_r

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide what the stage computes (everything but ``LAYOUT_FIELDS``)."""
        return {k: v for k, v in self.as_dict().items() if k not in LAYOUT_FIELDS}
