"""Shared builders for the training tests: a tiny LLaVA bundle and small LLaVA-JSON datasets on disk.

Everything is real: a BPE tokenizer trained here, a tiny-twin model from ``build_llava``, the
bundle written by ``save_bundle``, PNG images read back through ``LlavaJsonDataset``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from llava_more.model import get_llm, get_vision
from llava_more.model.builder import build_llava
from llava_more.model.bundle import BundleMeta, save_bundle
from llava_more.text import IMAGE_TOKEN, get_template
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer

LLM_ID = "llama3.1-8b"
VISION_ID = "clip-l-336"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}
REPO_ROOT = Path(__file__).resolve().parents[1]


def _corpus() -> list[str]:
    system = get_template("llama3.1").default_system or ""
    lines = [system, "What colour is the square?", "Say the name of a shape."]
    lines += [f"the square is {name}" for name in COLOURS] + ["the circle is round"]
    return lines * 20


def make_bundle(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama-3.1 x CLIP bundle with random weights (seeded) in ``folder/init``."""
    tokenizer = apply_template(
        train_demo_tokenizer(_corpus(), folder / "tokenizer", vocab_size=420), "llama3.1"
    )
    vision = get_vision(VISION_ID)
    torch.manual_seed(seed)
    model = build_llava(
        LLM_ID,
        VISION_ID,
        size="tiny",
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
    )
    meta = BundleMeta(
        llm_id=LLM_ID,
        vision_id=VISION_ID,
        size="tiny",
        s2_scales=None,
        template=get_llm(LLM_ID).template,
        image_tokens=vision.image_tokens("tiny"),
    )
    save_bundle(folder / "init", model, tokenizer, vision.image_processor("tiny"), meta)
    return folder / "init"


def make_dataset(folder: Path, n_images: int, n_text: int = 0) -> Path:
    """Colour-naming samples (non-square PNGs) plus text-only ones; returns the JSON path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    records = []
    for i in range(n_images):
        name = names[i % len(names)]
        Image.new("RGB", (40 + 8 * (i % 3), 48), COLOURS[name]).save(folder / "images" / f"{i}.png")
        question = "What colour is the square?" if i % 2 else "What colour is the square? Answer briefly."
        records.append(
            {
                "id": f"img{i}",
                "image": f"images/{i}.png",
                "conversations": [
                    {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                    {"from": "gpt", "value": f"the square is {name}"},
                ],
            }
        )
    for i in range(n_text):
        records.append(
            {
                "id": f"txt{i}",
                "conversations": [
                    {"from": "human", "value": "Say the name of a shape."},
                    {"from": "gpt", "value": "the circle is round"},
                ],
            }
        )
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def tiny_llava_for(bundle, llm: str, vision: str = "clip-l-336"):
    """A fresh tiny LLaVA (fp32) of ``llm`` x ``vision`` that takes ``bundle``'s tokenizer and samples."""
    tok = bundle.tokenizer
    model = build_llava(llm, vision, size="tiny", vocab_size=len(tok),
                        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), pad_token_id=tok.pad_token_id)  # fmt: skip
    return model.float()


def bundle_weights(bundle_dir: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(Path(bundle_dir).glob("*.safetensors")):
        weights.update(load_file(shard))
    return weights


def write_params(folder: Path, **overrides) -> Path:
    """A params.yaml whose ``test`` protocol is the demo one (required keys only) with ``overrides``
    on both stages."""
    import yaml

    from llava_more.config import StageRecipe

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    stages = params["protocols"]["demo"]
    # Only the demo's required keys: an optional one it sets (packing, say) would silently make the
    # CLI run differ from an in-process TrainConfig(**overrides) reference.
    params["protocols"]["test"] = {
        name: {**{k: v for k, v in stage.items() if k in StageRecipe.REQUIRED}, **overrides}
        for name, stage in stages.items()
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def cli_env() -> dict[str, str]:
    """Environment for a ``python -m llava_more`` subprocess: one thread, no inherited distributed vars."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train_cli(
    bundle: Path, data: Path, params: Path, out: Path, work: Path, *extra: str, stage: int = 1
) -> list[str]:
    return [
        sys.executable, "-m", "llava_more", "train", "--stage", str(stage), "--init", str(bundle),
        "--data", str(data), "--image-root", str(data.parent), "--out", str(out), "--work-dir", str(work),
        "--params", str(params), "--protocol", "test", *extra,
    ]  # fmt: skip
