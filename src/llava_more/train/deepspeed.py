"""DeepSpeed ZeRO-2 / ZeRO-3 configurations for the HF Trainer's ``deepspeed=`` argument.

Batch sizes, precision, clipping and bucket sizes are ``"auto"``: the Trainer fills them from its
``TrainingArguments`` (and the model's hidden size), so the protocol in ``params.yaml`` stays the one
source of those numbers. No optimizer or scheduler block: the Trainer's AdamW and cosine schedule
are used with every backend, so runs with and without DeepSpeed follow the same recipe.
"""

from __future__ import annotations

from typing import Any

from llava_more.errors import ConfigError

_COMMON: dict[str, Any] = {
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 10**9,  # the Trainer logs; DeepSpeed's own step prints would duplicate it
    "wall_clock_breakdown": False,
}


def zero2_config() -> dict[str, Any]:
    """ZeRO-2: optimizer states and gradients sharded, parameters replicated (stage 1 of LLaVA)."""
    return {
        **_COMMON,
        "zero_optimization": {
            "stage": 2,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_scatter": True,
            "reduce_bucket_size": "auto",
            "allgather_bucket_size": 2e8,
        },
    }


def zero3_config() -> dict[str, Any]:
    """ZeRO-3: parameters sharded too (stage 2 of LLaVA); the final model is gathered at save time."""
    return {
        **_COMMON,
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "sub_group_size": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
    }


def deepspeed_config(name: str) -> dict[str, Any] | None:
    """The config dict for a protocol's ``deepspeed`` value (``none`` gives ``None``)."""
    if name == "none":
        return None
    if name == "zero2":
        return zero2_config()
    if name == "zero3":
        return zero3_config()
    raise ConfigError(f"deepspeed: {name!r} is not one of none, zero2, zero3")
