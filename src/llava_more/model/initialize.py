"""Create the initial model bundle of a pair (before stage 1): model, per-LLM tokenizer, image processor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration, PreTrainedTokenizerBase

from llava_more.errors import UserError
from llava_more.model.builder import build_llava, build_llava_from_pretrained
from llava_more.model.bundle import META_FILE, BundleMeta, save_bundle
from llava_more.model.llm import LLMSpec, get_llm
from llava_more.model.llm.base import check_size
from llava_more.model.vision import get_vision
from llava_more.outputs import check_replaceable
from llava_more.text.templates import ChatTemplate

logger = logging.getLogger(__name__)


def load_tokenizer(tokenizer_dir: str | Path) -> PreTrainedTokenizerBase:
    path = Path(tokenizer_dir)
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise UserError(
            f"{path}: no tokenizer there (tokenizer.json / tokenizer_config.json); "
            "run `llava-more make-tokenizer` or point --tokenizer at the LLM's tokenizer folder"
        )
    return AutoTokenizer.from_pretrained(path)


def load_llm_tokenizer(llm: LLMSpec, llm_path: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer the LLM's checkpoint ships (``llm_path`` overrides where the checkpoint is)."""
    source = llm_path or llm.source
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"LLM {llm.id!r}: cannot load the tokenizer of {source!r} ({reason})") from None


def llm_chat_template(
    llm: LLMSpec, *, system_prompt: bool = True, own_tokenizer: PreTrainedTokenizerBase | None = None
) -> ChatTemplate:
    """The chat template a bundle of ``llm`` is trained and prompted with.

    A built-in template id, with its default system prompt unless ``system_prompt`` is false (or the
    LLM's declared one); otherwise ``own_tokenizer``'s own chat template (the checkpoint's tokenizer).
    """
    from llava_more.text import NO_SYSTEM_SUFFIX, get_template
    from llava_more.text.templates import with_default_system
    from llava_more.text.tokenizer_template import template_from_tokenizer

    if llm.template is not None:
        template = get_template(llm.template if system_prompt else llm.template + NO_SYSTEM_SUFFIX)
        if llm.system_prompt is not None and system_prompt:
            template = with_default_system(template, llm.system_prompt)
        return template
    if own_tokenizer is None:
        own_tokenizer = load_llm_tokenizer(llm)
    return template_from_tokenizer(
        own_tokenizer,
        system_prompt=llm.system_prompt if system_prompt else None,
        name=f"the tokenizer of LLM {llm.id!r} ({llm.source})",
    )


def set_generation_tokens(
    model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, stop_tokens: Sequence[str]
) -> None:
    """Make ``generate`` stop at the template's end-of-turn tokens and pad with the tokenizer's pad."""
    vocab = tokenizer.get_vocab()
    stop_ids = [vocab[t] for t in dict.fromkeys([*stop_tokens, tokenizer.eos_token]) if t in vocab]
    model.generation_config.eos_token_id = stop_ids or None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.config.text_config.pad_token_id = tokenizer.pad_token_id


def init_model(
    llm_id: str,
    vision_id: str,
    *,
    size: str,
    tokenizer_dir: str | Path | None,
    out_dir: str | Path,
    s2_scales: Sequence[int] | bool | None = None,
    pretrained: bool = False,
    llm_path: str | None = None,
    vision_path: str | None = None,
    seed: int = 0,
    system_prompt: bool = True,
) -> BundleMeta:
    """Build the pair's model (random tiny twin, or from checkpoints) and save it as a bundle.

    The tokenizer in ``tokenizer_dir`` (default: the LLM checkpoint's own) is configured for the LLM's
    chat template (``llm_chat_template``; this also adds ``<image>`` and the template's markers); the
    model's vocabulary is sized to it. ``system_prompt=False`` picks the template
    variant without a default system prompt; the bundle records that template id, so training,
    evaluation and chat all render the same prompts.
    """
    from llava_more.text import IMAGE_TOKEN
    from llava_more.text.tokenizer import apply_template

    llm, vision = get_llm(llm_id), get_vision(vision_id)
    check_size(size)
    check_replaceable(out_dir, META_FILE)  # before the (maybe long) checkpoint loading
    if s2_scales is True:
        scales = vision.s2_scales(size)
    elif s2_scales:
        scales = vision.s2_scales(size, s2_scales)
    else:
        scales = None
    if size == "real" and not pretrained:
        raise UserError(
            f"init-model {llm_id} x {vision_id}: a real-size model starts from its pretrained "
            "checkpoints; add --pretrained (random real-size weights are of no use)"
        )
    if pretrained and size == "tiny" and not (llm_path and vision_path):
        raise UserError(
            f"init-model {llm_id} x {vision_id}: --pretrained with --size tiny needs --llm-path and "
            "--vision-path (the registry's checkpoints are real-size)"
        )
    # Real pairs use their LLM's own tokenizer; tiny twins the demo tokenizer trained locally.
    own_tokenizer = None
    if tokenizer_dir is None or llm.template is None:
        own_tokenizer = load_llm_tokenizer(llm, llm_path)
    base_tokenizer = own_tokenizer if tokenizer_dir is None else load_tokenizer(tokenizer_dir)
    template = llm_chat_template(llm, system_prompt=system_prompt, own_tokenizer=own_tokenizer)
    # A declared pad token wins; a built-in's is what its real tokenizer offers anyway.
    tokenizer = apply_template(base_tokenizer, template, pad_token=llm.pad_token if llm.declared else None)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    common = {
        "s2_scales": scales,
        "vocab_size": len(tokenizer),
        "image_token_id": image_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    if pretrained:
        model = build_llava_from_pretrained(
            llm_id, vision_id, llm_path=llm_path, vision_path=vision_path, size=size, **common
        )
    else:
        model = build_llava(llm_id, vision_id, size=size, **common)
        if vision_path:
            # A random tiny LLM with a warmed-up tiny encoder (`llava-more warm-vision`): the demo's
            # stand-in for the study's pretrained encoders.
            tower = vision.model_class.from_pretrained(vision_path)
            model.model.vision_tower.load_state_dict(tower.state_dict())
    set_generation_tokens(model, tokenizer, template.stop_tokens)
    meta = BundleMeta(
        llm_id=llm_id,
        vision_id=vision_id,
        size=size,
        s2_scales=list(scales) if scales else None,
        template=template.id,
        image_tokens=vision.image_tokens(size),
        image_token=IMAGE_TOKEN,
    )
    save_bundle(out_dir, model, tokenizer, vision.image_processor(size, scales), meta)
    logger.info("wrote %s (%s, %s)", out_dir, model.config.model_type, meta)
    return meta
