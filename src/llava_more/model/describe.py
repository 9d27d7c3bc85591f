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


def plain_llava_statement() -> str:
    """Which built-in pairs save as plain ``llava`` checkpoints, as the README states it (a test compares).

    Derived from ``builder.llava_class_reasons``, the one place that decides: a pair is plain unless
    its LLM or its encoder needs what plain LLaVA lacks; S2 always does.
    """
    from llava_more.model.builder import llava_class_reasons
    from llava_more.model.llm import builtin_llms
    from llava_more.model.vision import builtin_visions

    llms, visions = builtin_llms(), builtin_visions()
    reasons = {
        (llm, vision): llava_class_reasons(
            llms[llm].config("real"), visions[vision], None, llms[llm].lm_head_bias
        )
        for llm in llms
        for vision in visions
    }
    plain_llms = [llm for llm in llms if any(not reasons[llm, v] for v in visions)]
    plain_visions = [v for v in visions if any(not reasons[llm, v] for llm in llms)]
    if any(reasons[llm, v] for llm in plain_llms for v in plain_visions):
        raise AssertionError("the plain pairs are not every LLM x encoder of two lists; reword the README")

    def own_reasons(backbone: str) -> str:  # what holds for every pair of this backbone
        shared = set.intersection(*(set(rs) for pair, rs in reasons.items() if backbone in pair))
        return "; ".join(sorted(shared))

    others = [
        f"`{backbone}` ({own_reasons(backbone)})"
        for backbone in [
            *(llm for llm in llms if llm not in plain_llms),
            *(v for v in visions if v not in plain_visions),
        ]
    ]

    def listed(ids: list[str]) -> str:
        quoted = [f"`{i}`" for i in ids]
        return ", ".join(quoted[:-1]) + " and " + quoted[-1] if len(quoted) > 1 else quoted[0]

    return (
        f"Without S2, the pairs of {listed(plain_llms)} with {listed(plain_visions)} are plain `llava` "
        "checkpoints that lmms-eval's `llava_hf` also loads; every S2 pair, and every pair with "
        f"{', '.join(others[:-1])} or {others[-1]}, is a `llava_more` checkpoint."
    )


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
