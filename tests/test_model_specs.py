"""Backbone registries, real-size shapes (built on the meta device), preprocessing and S2 geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from llava_more.errors import ConfigError, UnknownBackboneError
from llava_more.model import get_llm, get_vision, list_llms, list_visions
from llava_more.model.builder import build_llava
from llava_more.model.describe import describe_model
from llava_more.model.s2 import _stitch_and_pool, _tiles, s2_features, validate_s2_scales

torch.set_num_threads(1)

# Field notes, section 2 (published sizes, +-2%).
LLM_PARAMS = {
    "llama3.1-8b": 8.03e9,
    "deepseek-r1-distill-llama-8b": 8.03e9,
    "llama3-8b": 8.03e9,
    "vicuna-7b-v1.5": 6.74e9,
    "gemma2-2b": 2.61e9,
    "gemma2-9b": 9.24e9,
    "phi4-mini": 3.84e9,
    "phi-2": 2.78e9,
}
VISION_PARAMS = {
    "clip-l-336": 0.30e9,
    "siglip-so400m-384": 0.43e9,
    "siglip2-so400m-384": 0.43e9,
    "dinov2-l-224": 0.30e9,
    "dinov2-l-reg-224": 0.30e9,
}
VISION_TOKENS = {
    "clip-l-336": 576,
    "siglip-so400m-384": 729,
    "siglip2-so400m-384": 729,
    "dinov2-l-224": 256,
    "dinov2-l-reg-224": 256,
}
VISION_WIDTH = {
    "clip-l-336": 1024,
    "siglip-so400m-384": 1152,
    "siglip2-so400m-384": 1152,
    "dinov2-l-224": 1024,
    "dinov2-l-reg-224": 1024,
}
LLM_WIDTH = {
    "llama3.1-8b": 4096,
    "deepseek-r1-distill-llama-8b": 4096,
    "llama3-8b": 4096,
    "vicuna-7b-v1.5": 4096,
    "gemma2-2b": 2304,
    "gemma2-9b": 3584,
    "phi4-mini": 3072,
    "phi-2": 2560,
}

# The paper's models: every LLM with CLIP, the two encoder-ablation LLMs with every encoder, S2 pairs.
PAPER_MODELS = sorted(
    {(llm, "clip-l-336", False) for llm in LLM_PARAMS}
    | {(llm, vision, False) for llm in ("phi4-mini", "gemma2-9b") for vision in VISION_PARAMS}
    | {
        (llm, vision, True)
        for llm in ("llama3.1-8b", "gemma2-9b")
        for vision in ("clip-l-336", "siglip2-so400m-384")
    }
)


def test_registries_hold_the_contract_ids():
    assert set(list_llms()) == set(LLM_PARAMS)
    assert set(list_visions()) == set(VISION_PARAMS)


@pytest.mark.parametrize("llm,vision,s2", PAPER_MODELS, ids=lambda v: str(v))
def test_real_model_shapes_match_the_published_architectures(llm, vision, s2):
    record = describe_model(llm, vision, s2)
    assert record["llm_params"] == pytest.approx(LLM_PARAMS[llm], rel=0.02)
    assert record["vision_params"] == pytest.approx(VISION_PARAMS[vision], rel=0.02)
    assert record["image_tokens"] == VISION_TOKENS[vision]
    assert record["projector_in"] == VISION_WIDTH[vision] * (3 if s2 else 1)
    assert record["projector_out"] == LLM_WIDTH[llm]
    assert record["id"] == f"{llm}_{vision}" + ("_s2" if s2 else "")


def test_s2_projector_widths_are_three_times_the_encoder():
    assert describe_model("llama3.1-8b", "clip-l-336", True)["projector_in"] == 3072
    assert describe_model("llama3.1-8b", "siglip2-so400m-384", True)["projector_in"] == 3456
    assert get_vision("clip-l-336").s2_scales("real") == (336, 672, 1008)
    assert get_vision("siglip2-so400m-384").s2_scales("real") == (384, 768, 1152)
    assert get_vision("siglip2-so400m-384").s2_scales("tiny") == (48, 96, 144)


def test_model_class_follows_what_plain_llava_can_express():
    plain = describe_model("llama3.1-8b", "clip-l-336")
    assert plain["model_type"] == "llava" and plain["prefix_tokens_dropped"] == 1
    assert describe_model("llama3.1-8b", "siglip-so400m-384")["prefix_tokens_dropped"] == 0
    registers = describe_model("llama3.1-8b", "dinov2-l-reg-224")
    assert registers["model_type"] == "llava_more" and registers["prefix_tokens_dropped"] == 5
    # Gemma-2 soft-caps its logits and Phi-2 has a biased head: plain LLaVA would change their outputs.
    assert describe_model("gemma2-2b", "clip-l-336")["model_type"] == "llava_more"
    assert describe_model("phi-2", "clip-l-336")["model_type"] == "llava_more"


def test_real_llm_configs_keep_family_quirks():
    phi4 = get_llm("phi4-mini").config("real")
    assert phi4.rope_parameters["partial_rotary_factor"] == 0.75 and phi4.tie_word_embeddings
    gemma = get_llm("gemma2-9b").config("real")
    assert gemma.head_dim == 256 and gemma.final_logit_softcapping == 30.0 and gemma.tie_word_embeddings
    llama31 = get_llm("llama3.1-8b").config("real")
    assert (
        llama31.rope_parameters["rope_type"] == "llama3" and llama31.rope_parameters["rope_theta"] == 500000.0
    )
    templates = {i: get_llm(i).template for i in list_llms()}
    assert templates == {
        "llama3.1-8b": "llama3.1",
        "deepseek-r1-distill-llama-8b": "deepseek_r1",
        "llama3-8b": "llama3",
        "vicuna-7b-v1.5": "vicuna_v1",
        "gemma2-2b": "gemma2",
        "gemma2-9b": "gemma2",
        "phi4-mini": "phi4",
        "phi-2": "phi2",
    }


def test_tiny_twins_keep_family_quirks_and_take_the_vocab():
    gemma = get_llm("gemma2-2b").config("tiny", vocab_size=77)
    assert (gemma.vocab_size, gemma.hidden_size, gemma.num_hidden_layers) == (77, 64, 4)
    assert gemma.head_dim * gemma.num_attention_heads != gemma.hidden_size  # wide heads kept
    assert gemma.final_logit_softcapping == 30.0 and gemma.tie_word_embeddings
    phi4 = get_llm("phi4-mini").config("tiny", vocab_size=77)
    assert phi4.rope_parameters["partial_rotary_factor"] == 0.75 and phi4.tie_word_embeddings
    assert phi4.eos_token_id is None  # real token ids mean nothing in a tiny tokenizer
    clip = get_vision("clip-l-336")
    assert (clip.image_tokens("tiny"), clip.config("tiny").num_hidden_layers) == (36, 2)
    assert get_vision("dinov2-l-reg-224").config("tiny").num_register_tokens == 4


@pytest.mark.parametrize("getter,kind", [(get_llm, "LLM"), (get_vision, "vision encoder")])
def test_unknown_ids_list_the_valid_ones(getter, kind):
    with pytest.raises(UnknownBackboneError) as err:
        getter("llama-9000")
    message = str(err.value)
    assert "llama-9000" in message and kind in message
    valid = list_llms() if getter is get_llm else list_visions()
    assert all(v in message for v in valid)


def test_build_with_unknown_id_fails_before_building():
    with pytest.raises(UnknownBackboneError, match="clip-l-336"):
        build_llava("llama3.1-8b", "clip-h-999", size="tiny")


@pytest.mark.parametrize(
    "scales,bad",
    [([96, 144], "96"), ([48, 100], "100"), ([48, 144, 96], "96"), ([48, 48], "48"), ([], "empty")],
)
def test_bad_s2_scales_name_the_bad_value(scales, bad):
    with pytest.raises(ConfigError, match=bad):
        get_vision("clip-l-336").s2_scales("tiny", scales)
    with pytest.raises(ConfigError, match=bad):
        build_llava("llama3.1-8b", "clip-l-336", size="tiny", s2_scales=scales)


def test_siglip_s2_scales_must_be_multiples_of_384():
    with pytest.raises(ConfigError, match="700"):
        validate_s2_scales([384, 700], 384, "siglip2-so400m-384")
    assert get_vision("siglip2-so400m-384").s2_scales("real", [384, 768]) == (384, 768)


def _image(width=400, height=300, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "vision,size,s2,side,mean",
    [
        ("clip-l-336", "real", False, 336, 0.48145466),
        ("clip-l-336", "real", True, 1008, 0.48145466),
        ("siglip-so400m-384", "real", False, 384, 0.5),
        ("siglip2-so400m-384", "real", True, 1152, 0.5),
        ("dinov2-l-224", "real", False, 224, 0.485),
        ("dinov2-l-reg-224", "tiny", False, 48, 0.485),
        ("dinov2-l-224", "tiny", True, 144, 0.485),
        ("siglip-so400m-384", "tiny", False, 48, 0.5),
    ],
)
def test_image_processors_use_the_checkpoint_preprocessing(vision, size, s2, side, mean):
    spec = get_vision(vision)
    processor = spec.image_processor(size, spec.s2_scales(size) if s2 else None)
    assert processor.image_mean[0] == pytest.approx(mean)
    pixels = processor(_image(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, side, side)


def test_dinov2_resizes_then_center_crops():
    real = get_vision("dinov2-l-224").image_processor("real")
    assert (real.size["shortest_edge"], real.crop_size["height"]) == (256, 224)
    tiny = get_vision("dinov2-l-224").image_processor("tiny")
    assert (tiny.size["shortest_edge"], tiny.crop_size["height"]) == (56, 48)
    siglip = get_vision("siglip-so400m-384").image_processor("real")
    assert siglip.size == {"height": 384, "width": 384} and not siglip.do_center_crop


def test_s2_tiles_stitch_back_into_the_image():
    """Tiling then stitching with one 'feature' per pixel reproduces the image, area-pooled."""
    image = torch.randn(2, 3, 96, 96)
    tiles = _tiles(image, 96, 48)
    assert tiles.shape == (8, 3, 48, 48)
    assert torch.equal(tiles[1], image[0, :, :48, 48:])  # row-major: tile (0, 1) is the top-right quarter
    per_pixel = tiles.flatten(2).transpose(1, 2)  # (tiles, 48 * 48, 3)
    pooled = _stitch_and_pool(per_pixel, batch=2, n=2, grid=48)
    expected = F.avg_pool2d(image, 2).flatten(2).transpose(1, 2)
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_single_scale_s2_equals_one_encoder_pass():
    spec = get_vision("dinov2-l-reg-224")
    tower = spec.model_class(spec.config("tiny")).eval()
    pixels = torch.randn(2, 3, 48, 48)
    direct = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 5:]
    multi = s2_features(tower, pixels, [48], feature_layer=-2, num_prefix_tokens=5)
    assert torch.allclose(direct, multi, atol=1e-6)
    three = s2_features(
        tower, torch.randn(2, 3, 144, 144), [48, 96, 144], feature_layer=-2, num_prefix_tokens=5
    )
    assert three.shape == (2, 36, 3 * 64)


def test_registries_and_cli_parsers_import_without_torch():
    """params.yaml validation and `llava-more --help` must not pay for importing torch."""
    import subprocess
    import sys

    code = (
        "import sys, llava_more.model, llava_more.model.commands; "
        "from llava_more.model import get_vision; get_vision('clip-l-336').s2_scales('real', [336, 672]); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
