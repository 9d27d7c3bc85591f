"""``llava-more import-model``: published LLaVA checkpoints become bundles that compute what the original
code computes.

Tiny twins in the original LLaVA format (``tests/original_checkpoints.py``: Llama-3.1, Gemma-2 and
Phi-4-mini LLMs; CLIP, SigLIP, SigLIP2 and DINOv2-with-registers towers; with and without S2; towers
carried or fetched from ``mm_vision_tower``; pretrain-only projector releases) and a tiny native
transformers llava checkpoint are imported; the bundle's preprocessing, prompt tokens and logits are
compared with the same weights run the original way. What cannot be mapped exactly ends the real CLI
with one line naming the file and the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from llava_more.errors import UserError
from llava_more.model import get_llm, get_vision
from llava_more.model.bundle import load_bundle
from llava_more.model.checkpoint_import import ImportOptions, import_checkpoint
from llava_more.model.llava import LlavaMoreForConditionalGeneration
from llava_more.model.preprocess import pixel_values
from llava_more.text.encode import generation_prompt
from tests.original_checkpoints import (
    IMAGE_MARKER,
    OriginalLlava,
    original_prompt,
    read_state,
    save_tower,
    write_original_checkpoint,
    write_shards,
)

torch.set_num_threads(1)

QUESTION = "What color is the big shape?\nAnswer the question using a single word or phrase."
# (LLM, tower, S2 scales, tower carried in the checkpoint, spare embedding rows)
CASES = [
    ("llama3.1-8b", "clip-l-336", None, True, 0),
    ("llama3.1-8b", "clip-l-336", (48, 96, 144), False, 0),
    ("gemma2-9b", "siglip2-so400m-384", None, False, 0),
    ("gemma2-9b", "siglip-so400m-384", (48, 96), True, 0),
    ("phi4-mini", "clip-l-336", None, False, 8),
    ("phi4-mini", "siglip2-so400m-384", (48, 96, 144), False, 8),
    ("phi4-mini", "dinov2-l-reg-224", None, True, 8),
]


def _image(seed: int = 0, size: tuple[int, int] = (61, 45)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("towers")


def _collapse(ids: list[int], image_id: int) -> list[int]:
    """Our expanded image-token run as the original code's single ``-200`` marker."""
    out: list[int] = []
    for token in ids:
        if token == image_id:
            if not out or out[-1] != IMAGE_MARKER:
                out.append(IMAGE_MARKER)
        else:
            out.append(token)
    return out


def _bundle_inputs(bundle, image: Image.Image) -> tuple[list[int], torch.Tensor]:
    meta = bundle.meta
    prompt = generation_prompt(bundle.tokenizer, meta.template, QUESTION, has_image=True)
    expanded = prompt.replace("<image>", "<image>" * meta.image_tokens)
    ids = bundle.tokenizer(expanded, add_special_tokens=False)["input_ids"]
    return ids, pixel_values(bundle.image_processor, [image], meta.image_aspect_ratio)


@pytest.mark.parametrize(("llm_id", "vision_id", "s2", "carry", "spare"), CASES)
def test_imported_twin_computes_the_original_logits(tmp_path, towers, llm_id, vision_id, s2, carry, spare):
    tower = save_tower(vision_id, towers)
    checkpoint = write_original_checkpoint(
        tmp_path / "release",
        llm_id=llm_id,
        tower_dir=tower,
        s2_scales=s2,
        carry_tower=carry,
        spare_rows=spare,
    )
    meta = import_checkpoint(checkpoint, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    original = OriginalLlava(checkpoint)
    family = get_llm(llm_id).family

    # Which class: plain transformers LLaVA unless S2, register tokens or soft-capping need ours.
    needs_ours = bool(s2) or vision_id == "dinov2-l-reg-224" or family == "gemma2"
    assert isinstance(bundle.model, LlavaMoreForConditionalGeneration) == needs_ours
    assert type(bundle.model) is (
        LlavaMoreForConditionalGeneration if needs_ours else LlavaForConditionalGeneration
    )
    assert (meta.llm_id, meta.vision_id, meta.s2_scales) == (llm_id, vision_id, list(s2) if s2 else None)
    assert meta.template == get_llm(llm_id).template + "+original"
    assert meta.image_aspect_ratio == "pad" and meta.source == str(checkpoint)

    # The same pixels (the tower's own processor, padded with LLaVA's colour, resized for S2) ...
    image = _image()
    ids, ours_pixels = _bundle_inputs(bundle, image)
    theirs_pixels = original.pixel_values(image)
    torch.testing.assert_close(ours_pixels, theirs_pixels, rtol=0, atol=1e-6)
    assert ours_pixels.shape[-1] == (s2[-1] if s2 else get_vision(vision_id).image_size("tiny"))

    # ... the same prompt tokens (trained template, system prompt and tokenization) ...
    release_tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    image_id = bundle.tokenizer.convert_tokens_to_ids("<image>")
    expected_ids = original.tokenize(original_prompt(family, release_tokenizer, QUESTION), release_tokenizer)
    assert _collapse(ids, image_id) == expected_ids
    assert ids.count(image_id) == meta.image_tokens == original.image_features(theirs_pixels).shape[1]

    # ... and the same logits over the checkpoint's vocabulary.
    vocab = original.lm.config.vocab_size
    with torch.no_grad():
        ours = bundle.model(input_ids=torch.tensor([ids]), pixel_values=ours_pixels).logits[..., :vocab]
        theirs = original.logits(expected_ids, theirs_pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))

    # Rows added for <image> (when the checkpoint had no spare one) never win a generation step.
    extra = len(bundle.tokenizer) - vocab
    assert bundle.model.get_output_embeddings().weight.shape[0] == max(len(bundle.tokenizer), vocab)
    if spare:
        assert extra <= 0 and image_id < vocab
    else:
        assert extra > 0 and bundle.model.generation_config.suppress_tokens == list(
            range(vocab, vocab + extra)
        )
    # A plain pair is a stock llava checkpoint: transformers' own class loads it as saved.
    if not needs_ours:
        stock = LlavaForConditionalGeneration.from_pretrained(tmp_path / "bundle")
        with torch.no_grad():
            again = stock(input_ids=torch.tensor([ids]), pixel_values=ours_pixels).logits[..., :vocab]
        torch.testing.assert_close(again, ours, rtol=0, atol=0)


def test_tower_from_a_dead_cluster_path_is_taken_from_its_own_id(tmp_path, towers, monkeypatch):
    """mm_vision_tower names a folder of the machine that trained it: --vision-tower stands in for the
    Hub id (offline here), and the encoder is recognised by that path's name."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, no retries
    tower = save_tower("siglip2-so400m-384", towers)
    checkpoint = write_original_checkpoint(
        tmp_path / "release",
        llm_id="phi4-mini",
        tower_dir=tower,
        mm_vision_tower="/leonardo_work/encoders/siglip2-so400m-patch14-384",
        spare_rows=8,
    )
    with pytest.raises(UserError, match="siglip2-so400m-patch14-384"):
        # Without the Hub the encoder's own id cannot be fetched; the message says which it tried.
        import_checkpoint(checkpoint, tmp_path / "no-bundle")
    meta = import_checkpoint(checkpoint, tmp_path / "bundle", ImportOptions(vision_tower=str(tower)))
    assert meta.vision_id == "siglip2-so400m-384"
    config = json.loads((checkpoint / "config.json").read_text())
    config["mm_vision_tower"] = str(tower)
    (checkpoint / "config.json").write_text(json.dumps(config))
    bundle = load_bundle(tmp_path / "bundle")
    ids, pixels = _bundle_inputs(bundle, _image(1))
    original = OriginalLlava(checkpoint)
    with torch.no_grad():
        ours = bundle.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits
        theirs = original.logits(_collapse(ids, bundle.tokenizer.convert_tokens_to_ids("<image>")), pixels)
    torch.testing.assert_close(ours[..., : theirs.shape[-1]], theirs, rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "no-bundle").exists()


def test_pytorch_bin_release_with_old_saved_buffers(tmp_path, towers):
    """Older releases (LLaVA-1.5's own) are PyTorch .bin shards that still hold rotary inv_freq buffers."""
    tower = save_tower("clip-l-336", towers)
    checkpoint = write_original_checkpoint(
        tmp_path / "release", llm_id="llama3.1-8b", tower_dir=tower, carry_tower=True
    )
    state = read_state(checkpoint)
    for file in [*checkpoint.glob("*.safetensors"), checkpoint / "model.safetensors.index.json"]:
        file.unlink()
    head_dim = 64 // 4
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(head_dim // 2)
    state["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(37)[None]
    keys = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, part in halves.items():
        torch.save({k: state[k] for k in part}, checkpoint / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (checkpoint / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (checkpoint / "training_args.bin").write_bytes(b"not weights")

    import_checkpoint(checkpoint, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    ids, pixels = _bundle_inputs(bundle, _image(5))
    original = OriginalLlava(checkpoint)
    vocab = original.lm.config.vocab_size
    with torch.no_grad():
        ours = bundle.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[..., :vocab]
        theirs = original.logits(_collapse(ids, bundle.tokenizer.convert_tokens_to_ids("<image>")), pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_pretrain_release_takes_its_llm_from_the_base_checkpoint(tmp_path, towers):
    """A pretrain release is config.json + mm_projector.bin; the LLM and tokenizer come from --llm-base."""
    tower = save_tower("clip-l-336", towers)
    full = write_original_checkpoint(tmp_path / "full", llm_id="llama3.1-8b", tower_dir=tower)
    state = read_state(full)
    base = tmp_path / "Meta-Llama-3.1-8B-Instruct"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (base / name).write_bytes((full / name).read_bytes())
    llm_state = {k: v for k, v in state.items() if not k.startswith("model.mm_projector.")}
    write_shards(base, llm_state, shards=1)
    config = json.loads((full / "config.json").read_text())
    text_config = {k: v for k, v in config.items() if not k.startswith("mm_")}
    (base / "config.json").write_text(
        json.dumps(text_config | {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    assert AutoModelForCausalLM.from_pretrained(base) is not None  # a real LLM checkpoint folder

    release = tmp_path / "LLaVA_MORE-llama_3_1-8B-pretrain"
    release.mkdir()
    (release / "config.json").write_text(json.dumps(config))
    torch.save(
        {k: v for k, v in state.items() if k.startswith("model.mm_projector.")}, release / "mm_projector.bin"
    )

    meta = import_checkpoint(release, tmp_path / "bundle", ImportOptions(llm_base=str(base)))
    assert meta.llm_id == "llama3.1-8b"
    bundle = load_bundle(tmp_path / "bundle")
    original = OriginalLlava(release, llm_base=base)
    ids, pixels = _bundle_inputs(bundle, _image(2))
    vocab = original.lm.config.vocab_size
    with torch.no_grad():
        ours = bundle.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[..., :vocab]
        theirs = original.logits(_collapse(ids, bundle.tokenizer.convert_tokens_to_ids("<image>")), pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _native_checkpoint(folder: Path, towers: Path) -> Path:
    """A tiny transformers llava checkpoint laid out as llava-hf's (tokenizer with <image> and <pad>)."""
    llama_release = folder.parent / "vicuna-release"
    write_original_checkpoint(llama_release, llm_id="llama3.1-8b", tower_dir=save_tower("clip-l-336", towers))
    tokenizer = AutoTokenizer.from_pretrained(llama_release)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = get_llm("llama3.1-8b").config("tiny", vocab_size=len(tokenizer) + 4)
    text._name_or_path = "meta-llama/Llama-3.1-8B-Instruct"
    config = LlavaConfig(
        text_config=text,
        vision_config=get_vision("clip-l-336").config("tiny"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=36,
    )
    torch.manual_seed(3)
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    get_vision("clip-l-336").image_processor("tiny").save_pretrained(folder)
    return folder


def test_native_llava_checkpoint_imports_as_is(tmp_path, towers):
    source = _native_checkpoint(tmp_path / "llava-hf", towers)
    meta = import_checkpoint(source, tmp_path / "bundle")
    assert (meta.llm_id, meta.vision_id, meta.image_tokens) == ("llama3.1-8b", "clip-l-336", 36)
    bundle = load_bundle(tmp_path / "bundle")
    assert type(bundle.model) is LlavaForConditionalGeneration
    original = AutoModelForImageTextToText.from_pretrained(source)
    ids, pixels = _bundle_inputs(bundle, _image(4))
    with torch.no_grad():
        ours = bundle.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits
        theirs = original(input_ids=torch.tensor([ids]), pixel_values=pixels).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- refusals
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "llava_more.cli", "import-model", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def release(tmp_path_factory, towers) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "LLaVA_MORE-llama_3_1-8B-finetuning"
    return write_original_checkpoint(folder, llm_id="llama3.1-8b", tower_dir=save_tower("clip-l-336", towers))


def _copy(release: Path, to: Path) -> Path:
    to.mkdir()
    for file in release.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def _shard_with(folder: Path, key: str) -> Path:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return folder / weight_map[key]


def test_cli_imports_a_release(tmp_path, release):
    result = _cli(str(release), "--out", str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "bundle" / "llava_more.json").read_text())
    assert meta["template"] == "llama3.1+original" and meta["source"] == str(release)


def _without(release: Path, folder: Path, key: str) -> Path:
    folder = _copy(release, folder)
    shard = _shard_with(folder, key)
    state = load_file(str(shard))
    del state[key]
    save_file(state, str(shard), metadata={"format": "pt"})
    return folder


def test_cli_refuses_a_missing_projector(tmp_path, release):
    key = "model.mm_projector.0.weight"
    folder = _without(release, tmp_path / "release", key)
    line = _one_line_error(_cli(str(folder), "--out", str(tmp_path / "bundle")))
    assert key in line and str(folder / "model.safetensors.index.json") in line
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "key",
    ["model.mm_projector.2.bias", "model.layers.1.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"],
)
def test_any_missing_tensor_is_named(tmp_path, release, key):
    folder = _without(release, tmp_path / "release", key)
    with pytest.raises(UserError, match="no tensor " + key.replace(".", r"\.")) as err:
        import_checkpoint(folder, tmp_path / "bundle")
    assert str(folder / "model.safetensors.index.json") in str(err.value)


def _with_projector(release: Path, folder: Path, projector: str) -> Path:
    folder = _copy(release, folder)
    config = json.loads((folder / "config.json").read_text())
    config["mm_projector_type"] = projector
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_cli_refuses_an_unknown_projector_type(tmp_path, release):
    folder = _with_projector(release, tmp_path / "release", "mlp3x_gelu")
    line = _one_line_error(_cli(str(folder), "--out", str(tmp_path / "bundle")))
    assert str(folder / "config.json") in line and "mm_projector_type" in line and "'mlp3x_gelu'" in line


@pytest.mark.parametrize("projector", ["linear", "identity", "mlp2x_relu", "qformer"])
def test_only_the_two_layer_gelu_projector_maps(tmp_path, release, projector):
    folder = _with_projector(release, tmp_path / "release", projector)
    with pytest.raises(UserError, match=f"mm_projector_type '{projector}'"):
        import_checkpoint(folder, tmp_path / "bundle")


def test_cli_refuses_a_tensor_whose_shape_disagrees(tmp_path, release):
    folder = _copy(release, tmp_path / "release")
    key = "model.mm_projector.0.weight"
    shard = _shard_with(folder, key)
    state = load_file(str(shard))
    state[key] = state[key][:, :-8].contiguous()
    save_file(state, str(shard), metadata={"format": "pt"})
    line = _one_line_error(_cli(str(folder), "--out", str(tmp_path / "bundle")))
    assert str(shard) in line and key in line and "shape" in line


def test_cli_refuses_a_config_whose_sizes_disagree(tmp_path, release):
    folder = _copy(release, tmp_path / "release")
    config = json.loads((folder / "config.json").read_text())
    config["mm_hidden_size"] *= 3  # as if S2, but no s2 flag
    (folder / "config.json").write_text(json.dumps(config))
    line = _one_line_error(_cli(str(folder), "--out", str(tmp_path / "bundle")))
    assert str(folder / "config.json") in line and "mm_hidden_size" in line


def test_refusals_in_process(tmp_path, release):
    """LLaVA-NeXT tiling, image start/end tokens and a foreign model type are refused by name too."""
    for change, key in (
        ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
        ({"model_type": "llava_mistral", "architectures": ["LlavaMistralForCausalLM"]}, "model_type"),
    ):
        folder = _copy(release, tmp_path / f"release-{key}")
        config = json.loads((folder / "config.json").read_text()) | change
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(UserError, match=key) as err:
            import_checkpoint(folder, tmp_path / "bundle")
        assert str(folder / "config.json") in str(err.value)


def test_the_study_s_labels_must_match_the_checkpoint(tmp_path, release):
    """A published study names what each checkpoint is; a release that says otherwise is refused."""
    with pytest.raises(UserError, match=r"s2 / s2_scales say no S2, but the import was told s2 is True"):
        import_checkpoint(release, tmp_path / "a", ImportOptions(expect_s2=True))
    with pytest.raises(
        UserError, match=r"_name_or_path .*Meta-Llama-3.1-8B-Instruct' is llama3.1-8b, not the "
    ):
        import_checkpoint(release, tmp_path / "b", ImportOptions(llm_id="deepseek-r1-distill-llama-8b"))
    with pytest.raises(UserError, match=r"mm_vision_tower .* is clip-l-336, not the siglip-so400m-384"):
        import_checkpoint(release, tmp_path / "c", ImportOptions(vision_id="siglip-so400m-384"))
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_release_template_that_renders_other_prompts_is_reported(tmp_path, release, caplog):
    """The release's own tokenizer template is what the Llama-3.1 checkpoints were trained through."""
    import logging

    with caplog.at_level(logging.WARNING, logger="llava_more.model.checkpoint_import"):
        import_checkpoint(release, tmp_path / "same")
    assert "prompts differ from training" not in caplog.text
    folder = _copy(release, tmp_path / "release")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = config["chat_template"].replace(
        "Today Date: 26 Jul 2024", "Today Date: 1 Jan 2026"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="llava_more.model.checkpoint_import"):
        import_checkpoint(folder, tmp_path / "other")
    assert "prompts differ from training" in caplog.text and "1 Jan 2026" in caplog.text
