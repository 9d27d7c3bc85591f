"""Stage-2 LoRA through peft: adapters on the LLM's linear layers, the projector trained in full.

The projector is a peft ``modules_to_save`` module so that checkpoints (which hold only what
trains) carry it; ``merge_lora`` folds the adapters back so the exported bundle is a plain model.
"""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig, PeftModel, get_peft_model

logger = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"


def llm_linear_layers(model: torch.nn.Module) -> list[str]:
    """Full names of every ``nn.Linear`` inside the language model (the LM head is not one of them)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".language_model." in f".{name}."
    ]


def add_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float) -> PeftModel:
    targets = llm_linear_layers(model)
    if not targets:
        raise ValueError("no linear layer found in the language model to put LoRA adapters on")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=[PROJECTOR],
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    logger.info(
        "LoRA r=%d alpha=%d on %d linear layers of the LLM; projector trained in full", r, alpha, len(targets)
    )
    return peft_model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with adapters merged in (unchanged when ``model`` is not a peft model)."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model
