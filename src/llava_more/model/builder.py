"""Build a LLaVA model from registry ids (built-in or declared): a real-size or tiny twin with random
weights, or from checkpoints.

Which class is built is decided in one place (``llava_class_reasons``): a plain transformers
``LlavaForConditionalGeneration`` whenever it can represent the pair exactly, otherwise our
``LlavaMoreForConditionalGeneration``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration, PretrainedConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_more.model.llava import LlavaMoreConfig, LlavaMoreForConditionalGeneration, LlavaMoreProjector
from llava_more.model.llm import LLMSpec, get_llm
from llava_more.model.llm.base import check_size
from llava_more.model.vision import VisionSpec, get_vision


def llava_class_reasons(
    text_config: PretrainedConfig, vision: VisionSpec, s2_scales: Sequence[int] | None, lm_head_bias: bool
) -> list[str]:
    """Why plain transformers LLaVA cannot represent this pair (empty list: it can)."""
    reasons = []
    if s2_scales:
        reasons.append("S2 multi-scale features")
    if vision.num_prefix_tokens > 1:
        reasons.append(f"{vision.num_prefix_tokens} prefix tokens to drop (CLS + registers)")
    if lm_head_bias:
        reasons.append("LM head with a bias")
    if getattr(text_config, "final_logit_softcapping", None) is not None:
        reasons.append("final logit soft-capping")
    return reasons


def llava_config(
    text_config: PretrainedConfig,
    vision_config: PretrainedConfig,
    vision: VisionSpec,
    *,
    size: str,
    s2_scales: Sequence[int] | None,
    image_token_id: int,
    lm_head_bias: bool,
) -> LlavaConfig:
    """The LLaVA config joining a text and a vision config (plain or ``llava_more``)."""
    common = {
        "text_config": text_config,
        "vision_config": vision_config,
        "image_token_index": image_token_id,
        "image_seq_length": vision.image_tokens(size),
        "vision_feature_layer": vision.feature_layer,
        "projector_hidden_act": "gelu",
    }
    if not llava_class_reasons(text_config, vision, s2_scales, lm_head_bias):
        strategy = "full" if vision.num_prefix_tokens == 0 else "default"
        return LlavaConfig(**common, vision_feature_select_strategy=strategy)
    return LlavaMoreConfig(
        **common,
        vision_feature_select_strategy="full",  # the subclass drops num_prefix_tokens itself
        s2_scales=list(s2_scales) if s2_scales else None,
        num_prefix_tokens=vision.num_prefix_tokens,
        lm_head_bias=lm_head_bias,
        final_logit_softcapping=getattr(text_config, "final_logit_softcapping", None),
    )


def _model_class(config: LlavaConfig) -> type[LlavaForConditionalGeneration]:
    return (
        LlavaMoreForConditionalGeneration
        if isinstance(config, LlavaMoreConfig)
        else LlavaForConditionalGeneration
    )


def _resolve(
    llm_id: str, vision_id: str, size: str, s2_scales: Sequence[int] | None
) -> tuple[LLMSpec, VisionSpec, tuple[int, ...] | None]:
    llm, vision = get_llm(llm_id), get_vision(vision_id)
    scales = vision.s2_scales(check_size(size), s2_scales) if s2_scales is not None else None
    return llm, vision, scales


def build_llava(
    llm_id: str,
    vision_id: str,
    *,
    size: str,
    s2_scales: Sequence[int] | None = None,
    vocab_size: int | None = None,
    image_token_id: int | None = None,
    pad_token_id: int | None = None,
    device: str | torch.device = "cpu",
) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA model for ``llm_id`` x ``vision_id`` at ``size``.

    ``vocab_size`` is the tokenizer's size (tiny twins need it). Without ``image_token_id`` the
    vocabulary grows by one and the new last id is the image token. ``device="meta"`` builds the
    real-size architecture without allocating memory (shape and parameter-count checks).
    """
    llm, vision, scales = _resolve(llm_id, vision_id, size, s2_scales)
    text_config = llm.config(size, vocab_size)
    if image_token_id is None:
        image_token_id = text_config.vocab_size
        text_config.vocab_size += 1
    if not 0 <= image_token_id < text_config.vocab_size:
        raise ValueError(
            f"image token id {image_token_id} is outside the vocabulary ({text_config.vocab_size})"
        )
    if pad_token_id is not None:
        text_config.pad_token_id = pad_token_id
    config = llava_config(
        text_config,
        vision.config(size),
        vision,
        size=size,
        s2_scales=scales,
        image_token_id=image_token_id,
        lm_head_bias=llm.lm_head_bias,
    )
    with torch.device(device):
        return _model_class(config)(config)


def build_llava_from_pretrained(
    llm_id: str,
    vision_id: str,
    *,
    llm_path: str | None = None,
    vision_path: str | None = None,
    size: str = "real",
    s2_scales: Sequence[int] | None = None,
    vocab_size: int | None = None,
    image_token_id: int | None = None,
    pad_token_id: int | None = None,
    dtype: torch.dtype | None = None,
) -> LlavaForConditionalGeneration:
    """LLaVA assembled from pretrained checkpoints (Hugging Face ids or local folders).

    ``llm_path`` / ``vision_path`` default to the registry's checkpoints (Hub id or local path); ``size`` says which
    geometry the checkpoints have ("tiny" for tiny twins saved locally). The LLM and the
    vision tower keep their checkpoint configs and weights; the projector is freshly initialised
    (PyTorch's default Linear init, as LLaVA builds it after loading). When ``vocab_size`` exceeds
    the checkpoint's vocabulary (the added ``<image>`` token), the embeddings are resized; without
    ``image_token_id`` the image token is appended as a new last id, as in ``build_llava``.
    """
    llm, vision, scales = _resolve(llm_id, vision_id, size, s2_scales)
    load_kwargs = {"dtype": dtype} if dtype is not None else {}
    causal_lm = AutoModelForCausalLM.from_pretrained(llm_path or llm.source, **load_kwargs)
    vision_tower = vision.model_class.from_pretrained(vision_path or vision.source, **load_kwargs)
    text_config = causal_lm.config
    lm_head_bias = causal_lm.get_output_embeddings().bias is not None
    if image_token_id is None:  # append it after everything the tokenizer and checkpoint know
        image_token_id = max(vocab_size or 0, text_config.vocab_size)
    if pad_token_id is not None:
        text_config.pad_token_id = pad_token_id
    config = llava_config(
        text_config,
        vision_tower.config,
        vision,
        size=size,
        s2_scales=scales,
        image_token_id=image_token_id,
        lm_head_bias=lm_head_bias,
    )
    # Build the shell without memory, then put the loaded parts in it.
    with torch.device("meta"):
        model = _model_class(config)(config)
    model.model.vision_tower = vision_tower
    model.model.language_model = getattr(causal_lm, causal_lm.base_model_prefix)
    projector_dtype = next(causal_lm.parameters()).dtype
    model.model.multi_modal_projector = _projector(config).to(projector_dtype)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.get_input_embeddings().weight
    else:
        model.lm_head = causal_lm.get_output_embeddings()
    new_vocab = max(vocab_size or 0, image_token_id + 1)
    if new_vocab > text_config.vocab_size:
        model.resize_token_embeddings(new_vocab)
    stranded = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if stranded:
        raise RuntimeError(f"parameters left unloaded after assembly: {stranded[:5]}")
    model.generation_config = causal_lm.generation_config
    return model


def _projector(config: LlavaConfig) -> torch.nn.Module:
    if isinstance(config, LlavaMoreConfig):
        return LlavaMoreProjector(config)
    return LlavaMultiModalProjector(config)
