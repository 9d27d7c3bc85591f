"""Which parts of LLaVA train in each stage: stage 1 the projector, stage 2 projector + LLM; vision never."""

from __future__ import annotations

from transformers import LlavaForConditionalGeneration

STAGES = (1, 2)


def freeze_for_stage(model: LlavaForConditionalGeneration, stage: int) -> dict[str, int]:
    """Set ``requires_grad`` for ``stage`` and return parameter counts {"trainable", "frozen"}."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if stage == 2:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)  # tied heads share the embedding's flag anyway
    # Parameters shared by tying are counted once.
    counts = {"trainable": 0, "frozen": 0}
    for param in model.parameters():
        counts["trainable" if param.requires_grad else "frozen"] += param.numel()
    return counts
