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
from llava_more.model.llm import get_llm
from llava_more.model.llm.base import check_size
from llava_more.model.vision import get_vision
from llava_more.outputs import check_replaceable

log = logging.getLogger(__name__)


def load_tokenizer(tokenizer_dir: str | Path) -> PreTrainedTokenizerBase:
    path = Path(tokenizer_dir)
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise UserError(
            f"{path}: no tokenizer there (tokenizer.json / tokenizer_config.json); "
            "run `llava-more make-tokenizer` or point --tokenizer at the LLM's tokenizer folder"
        )
    return AutoTokenizer.from_pretrained(path)


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

    The tokenizer in ``tokenizer_dir`` is configured for the LLM's chat template (which also adds
    ``<image>``); the model's vocabulary is sized to it. ``system_prompt=False`` picks the template
    variant without a default system prompt; the bundle records that template id, so training,
    evaluation and chat all render the same prompts.
    """
    from llava_more.text import IMAGE_TOKEN, NO_SYSTEM_SUFFIX, apply_template, get_template

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
            "--vision-path (the registry's Hugging Face ids are real-size checkpoints)"
        )
    template_id = llm.template if system_prompt else llm.template + NO_SYSTEM_SUFFIX
    # Real pairs use their LLM's own tokenizer; tiny twins the demo tokenizer trained locally.
    if tokenizer_dir is None:
        from transformers import AutoTokenizer

        base_tokenizer = AutoTokenizer.from_pretrained(llm_path or llm.hf_id)
    else:
        base_tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer = apply_template(base_tokenizer, template_id)
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
    set_generation_tokens(model, tokenizer, get_template(template_id).stop_tokens)
    meta = BundleMeta(
        llm_id=llm_id,
        vision_id=vision_id,
        size=size,
        s2_scales=list(scales) if scales else None,
        template=template_id,
        image_tokens=vision.image_tokens(size),
        image_token=IMAGE_TOKEN,
    )
    save_bundle(out_dir, model, tokenizer, vision.image_processor(size, scales), meta)
    log.info("wrote %s (%s, %s)", out_dir, model.config.model_type, meta)
    return meta
