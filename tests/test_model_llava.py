"""Tiny twins of every LLM family x vision family, with and without S2, end to end on transformers' classes:
forward with labels, backward under the stage freezing, generate, bundle save/load, Auto classes,
and assembly from pretrained backbones loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from llava_more.errors import UserError
from llava_more.model import get_llm, get_vision
from llava_more.model.builder import build_llava, build_llava_from_pretrained
from llava_more.model.bundle import BundleMeta, load_bundle, save_bundle
from llava_more.model.freezing import freeze_for_stage
from llava_more.model.llava import LlavaMoreForConditionalGeneration
from llava_more.outputs import OutputPathError

torch.set_num_threads(1)

IMAGE = "<image>"
LLM_FAMILIES = {"llama": "llama3.1-8b", "gemma2": "gemma2-2b", "phi3": "phi4-mini", "phi": "phi-2"}
VISION_FAMILIES = {
    "clip": "clip-l-336",
    "siglip": "siglip2-so400m-384",
    "dinov2": "dinov2-l-224",
    "dinov2_reg": "dinov2-l-reg-224",
}
MATRIX = [
    (llm, vision, s2)
    for llm in LLM_FAMILIES.values()
    for vision in VISION_FAMILIES.values()
    for s2 in (False, True)
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    words = ["<pad>", "<unk>", "<s>", "</s>", IMAGE] + [f"w{i}" for i in range(40)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=[IMAGE],
    )


def _images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 56, 3), dtype=np.uint8)) for i in range(n)]


def _build(tokenizer, llm, vision, s2, seed=0):
    torch.manual_seed(seed)
    spec = get_vision(vision)
    scales = spec.s2_scales("tiny") if s2 else None
    model = build_llava(
        llm,
        vision,
        size="tiny",
        s2_scales=scales,
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        pad_token_id=tokenizer.pad_token_id,
    )
    meta = BundleMeta(
        llm,
        vision,
        "tiny",
        list(scales) if scales else None,
        get_llm(llm).template,
        spec.image_tokens("tiny"),
        IMAGE,
    )
    return model, spec.image_processor("tiny", scales), meta


def _batch(tokenizer, meta, processor, seed=0):
    text = f"<s> w1 {IMAGE * meta.image_tokens} w2 w3 w4 w5"
    ids = tokenizer([text, text], return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, : 2 + meta.image_tokens] = -100  # supervise the caption only, as stage 1 does
    pixels = processor(_images(2, seed), return_tensors="pt")["pixel_values"]
    return ids, labels, pixels


@pytest.mark.parametrize("llm,vision,s2", MATRIX, ids=lambda v: str(v))
def test_tiny_twin_trains_generates_and_round_trips(tmp_path, tokenizer, llm, vision, s2):
    model, processor, meta = _build(tokenizer, llm, vision, s2)
    ids, labels, pixels = _batch(tokenizer, meta, processor)
    expected_side = 144 if s2 else 48
    assert pixels.shape[-1] == expected_side

    # Stage 2: projector and LLM learn, the vision tower never does.
    freeze_for_stage(model, 2)
    model.train()
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert model.model.language_model.get_input_embeddings().weight.grad is not None

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
        other_image = model(input_ids=ids, pixel_values=torch.flip(pixels, dims=[0])).logits
    assert not torch.allclose(logits[0], other_image[0])  # the image reaches the LLM
    generated = model.generate(
        input_ids=ids[:1], pixel_values=pixels[:1], max_new_tokens=3, min_new_tokens=3, do_sample=False
    )
    assert generated.shape == (1, ids.shape[1] + 3)
    assert generated[0, ids.shape[1]] == logits[0, -1].argmax()  # generate sees the same image features

    save_bundle(tmp_path / "bundle", model, tokenizer, processor, meta)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.meta == meta
    assert type(bundle.model) is type(model)
    with torch.no_grad():
        assert torch.equal(bundle.model(input_ids=ids, pixel_values=pixels).logits, logits)
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path / "bundle")
    with torch.no_grad():
        assert torch.equal(auto(input_ids=ids, pixel_values=pixels).logits, logits)
    reloaded_pixels = bundle.image_processor(_images(2, 0), return_tensors="pt")["pixel_values"]
    assert torch.equal(reloaded_pixels, pixels)

    # lmms-eval's llava_hf path: the processor expands <image> to exactly the model's feature count.
    processor_out = AutoProcessor.from_pretrained(tmp_path / "bundle")(
        images=_images(1, 3), text=f"w1 {IMAGE} w2", return_tensors="pt"
    )
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    assert int((processor_out["input_ids"] == image_id).sum()) == meta.image_tokens
    with torch.no_grad():
        bundle.model(**processor_out)


def test_plain_pairs_are_plain_transformers_llava(tokenizer):
    model, _, _ = _build(tokenizer, "llama3.1-8b", "clip-l-336", False)
    assert type(model) is LlavaForConditionalGeneration
    assert model.config.vision_feature_select_strategy == "default"
    siglip, _, _ = _build(tokenizer, "phi4-mini", "siglip-so400m-384", False)
    assert type(siglip) is LlavaForConditionalGeneration
    assert siglip.config.vision_feature_select_strategy == "full"
    assert siglip.lm_head.weight is siglip.model.language_model.get_input_embeddings().weight  # tied
    registers, _, _ = _build(tokenizer, "llama3.1-8b", "dinov2-l-reg-224", False)
    assert type(registers) is LlavaMoreForConditionalGeneration


def test_register_model_drops_cls_and_registers(tokenizer):
    model, processor, _ = _build(tokenizer, "llama3.1-8b", "dinov2-l-reg-224", False)
    model.eval()
    pixels = processor(_images(1, 0), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=pixels).pooler_output[0]
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
        expected = model.model.multi_modal_projector(hidden[:, 5:])[0]
    assert features.shape == (36, 64)
    assert torch.allclose(features, expected, atol=1e-6)


def test_stage1_trains_only_the_projector(tokenizer):
    model, processor, meta = _build(tokenizer, "gemma2-2b", "siglip-so400m-384", False)
    counts = freeze_for_stage(model, 1)
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert counts["trainable"] == projector
    ids, labels, pixels = _batch(tokenizer, meta, processor)
    model(input_ids=ids, pixel_values=pixels, labels=labels).loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trained and all(name.startswith("model.multi_modal_projector.") for name in trained)
    with pytest.raises(ValueError):
        freeze_for_stage(model, 3)


def test_gemma2_logits_are_soft_capped(tokenizer):
    model, processor, meta = _build(tokenizer, "gemma2-2b", "clip-l-336", False)
    model.eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)  # tied: also scales the embeddings; logits far beyond the cap
        ids, _, pixels = _batch(tokenizer, meta, processor)
        logits = model(input_ids=ids, pixel_values=pixels).logits
    assert logits.abs().max() <= 30.0
    assert logits.abs().max() > 29.0


@pytest.mark.parametrize(
    "llm,vision,s2",
    [
        ("llama3.1-8b", "clip-l-336", False),
        ("gemma2-2b", "siglip-so400m-384", True),
        ("phi4-mini", "dinov2-l-224", False),
        ("phi-2", "dinov2-l-reg-224", False),
    ],
)
def test_assembly_from_pretrained_backbones_keeps_their_outputs(tmp_path, tokenizer, llm, vision, s2):
    torch.manual_seed(1)
    causal_lm = AutoModelForCausalLM.from_config(get_llm(llm).config("tiny", vocab_size=40)).eval()
    head = causal_lm.get_output_embeddings()
    if head.bias is not None:  # Phi-2: make the bias matter
        torch.nn.init.normal_(head.bias)
    causal_lm.save_pretrained(tmp_path / "llm")
    spec = get_vision(vision)
    tower = spec.model_class(spec.config("tiny")).eval()
    tower.save_pretrained(tmp_path / "vision")

    model = build_llava_from_pretrained(
        llm,
        vision,
        llm_path=str(tmp_path / "llm"),
        vision_path=str(tmp_path / "vision"),
        size="tiny",
        s2_scales=spec.s2_scales("tiny") if s2 else None,
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
    ).eval()
    assert model.config.text_config.vocab_size == len(tokenizer)  # resized for the tokenizer's extra tokens
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = causal_lm(input_ids=ids).logits
        got = model(input_ids=ids).logits[..., :40]
        assert torch.allclose(got, expected, atol=1e-5)  # same LLM, same head (bias, soft-cap, tying)
        base_pixels = spec.image_processor("tiny")(_images(1, 0), return_tensors="pt")["pixel_values"]
        assert torch.equal(
            model.model.vision_tower(base_pixels, output_hidden_states=True).hidden_states[-2],
            tower(base_pixels, output_hidden_states=True).hidden_states[-2],
        )
    assert model.model.multi_modal_projector.linear_1.in_features == 64 * (3 if s2 else 1)
    processor = spec.image_processor("tiny", spec.s2_scales("tiny") if s2 else None)
    pixels = processor(_images(1, 0), return_tensors="pt")["pixel_values"]
    text = f"w1 {IMAGE * spec.image_tokens('tiny')} w2"
    batch = tokenizer([text], return_tensors="pt")
    assert torch.isfinite(model(**batch, pixel_values=pixels, labels=batch["input_ids"]).loss)


def test_load_bundle_rejects_a_folder_without_metadata(tmp_path):
    with pytest.raises(UserError, match="llava_more.json"):
        load_bundle(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_bundle(tmp_path / "missing")


def test_save_bundle_replaces_an_existing_bundle_atomically(tmp_path, tokenizer):
    model, processor, meta = _build(tokenizer, "phi4-mini", "clip-l-336", False)
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "llava_more.json").write_text("{}")  # an earlier bundle
    (target / "stale.txt").write_text("old")
    save_bundle(target, model, tokenizer, processor, meta)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left behind
    # A folder that is not a bundle (nor written by llava-more) is never deleted to make room.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="did not write"):
        save_bundle(other, model, tokenizer, processor, meta)
    assert [p.name for p in other.iterdir()] == ["todo.txt"]


def test_s2_model_runs_in_bfloat16(tokenizer):
    model, processor, meta = _build(tokenizer, "llama3.1-8b", "clip-l-336", True)
    model = model.to(torch.bfloat16).eval()
    ids, labels, pixels = _batch(tokenizer, meta, processor)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels.to(torch.bfloat16), labels=labels)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
