"""Shape and size facts of a LLaVA model, computed by building it on the meta device (no memory, no download)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from llava_more.model.builder import build_llava
from llava_more.model.llava import LlavaMoreConfig
from llava_more.model.vision import get_vision


def count_parameters(modules: Iterable[nn.Module]) -> int:
    """Parameters of ``modules`` together, each shared (tied) tensor counted once."""
    seen: dict[int, int] = {}
    for module in modules:
        for param in module.parameters():
            seen[id(param)] = param.numel()
    return sum(seen.values())


def describe_backbone(kind: str, backbone_id: str) -> dict:
    """One record per backbone (``kind`` "llm" or "vision"): where it comes from, its family and its
    real-size parameter count (built on the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llava_more.model.llm import get_llm

    spec = get_llm(backbone_id) if kind == "llm" else get_vision(backbone_id)
    with torch.device("meta"):
        if kind == "llm":
            model = AutoModelForCausalLM.from_config(spec.config("real"))
        else:
            model = spec.model_class(spec.config("real"))
    record = {
        "id": spec.id,
        "kind": kind,
        "origin": "declared" if spec.declared else "built-in",
        "source": spec.source,
        "family": spec.family,
        "params": count_parameters([model]),
    }
    if kind == "llm":
        from llava_more.text.templates import TOKENIZER_TEMPLATE_ID

        record["template"] = spec.template or TOKENIZER_TEMPLATE_ID
    else:
        record.update(image_tokens=spec.image_tokens("real"), prefix_tokens=spec.num_prefix_tokens)
    return record


def pair_id(llm_id: str, vision_id: str, s2: bool) -> str:
    return f"{llm_id}_{vision_id}" + ("_s2" if s2 else "")


def describe_model(
    llm_id: str, vision_id: str, s2_scales: Sequence[int] | bool | None = None, *, size: str = "real"
) -> dict:
    """One record: ids, parameter counts and projector / token geometry of ``llm_id`` x ``vision_id``.

    ``s2_scales`` True means the encoder's default scales; a sequence is validated for the encoder.
    """
    if s2_scales is True:
        s2_scales = get_vision(vision_id).s2_scales(size)
    elif s2_scales is False:
        s2_scales = None
    model = build_llava(llm_id, vision_id, size=size, s2_scales=s2_scales, device="meta")
    config = model.config
    projector = model.model.multi_modal_projector
    return {
        "id": pair_id(llm_id, vision_id, bool(s2_scales)),
        "llm": llm_id,
        "vision": vision_id,
        "size": size,
        "s2": bool(s2_scales),
        "s2_scales": list(s2_scales) if s2_scales else None,
        "model_type": config.model_type,
        "llm_params": count_parameters([model.model.language_model, model.lm_head]),
        "vision_params": count_parameters([model.model.vision_tower]),
        "projector_params": count_parameters([projector]),
        "projector_in": projector.linear_1.in_features,
        "projector_out": projector.linear_2.out_features,
        "image_tokens": config.image_seq_length,
        "prefix_tokens_dropped": config.num_prefix_tokens
        if isinstance(config, LlavaMoreConfig)
        else int(config.vision_feature_select_strategy == "default"),
    }
