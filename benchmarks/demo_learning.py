"""How much a demo model has learned to read the image: first-answer-token accuracy per question type.

    # probe a trained bundle
    python benchmarks/demo_learning.py --model runs/demo/stage2/llama3.1-8b_clip-l-336_demo-lcs
    # train stage 2 longer (or on a subset of the mix) from a bundle, then probe the result
    python benchmarks/demo_learning.py --train-from runs/demo/stage1/llama3.1-8b_clip-l-336_demo-lcs \\
        --epochs 6 [--kinds short,existence] --out /tmp/learning-e6

The probe draws fresh scenes (not in the training data), asks one question type at a time in the
demo's prompt format, and checks whether the model's most likely first answer token is the right
one (chance: 1/6 for a colour, about 1/3 for a count, 1/2 for the background or yes/no, 1/4 for
the letter of a four-option question). It reads
logits directly, so it measures the model, not the answer parsing of a benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from llava_more.data import demo_questions as questions
from llava_more.data import demo_world as world
from llava_more.model.bundle import load_bundle
from llava_more.model.preprocess import pixel_values
from llava_more.text.encode import encode_conversation
from llava_more.train.dataset import LlavaCollator

INSTRUCT = Path("data/instruct/demo-instruct")

PROBES: dict[str, Callable[[world.Scene, random.Random], questions.QA]] = {
    "big-shape colour": lambda s, r: questions.QA(questions.SHORT, "What color is the big shape?", world.main_shape(s).color),
    "count": lambda s, r: questions.QA(questions.SHORT, "How many shapes are there?", str(world.count_shapes(s))),
    "background": lambda s, r: questions.QA(questions.SHORT, "What color is the background?", s.background),
    "colour existence": lambda s, r: questions.existence_question(s, r),
    "choice letter": lambda s, r: questions.multiple_choice_question(s, r),
}  # fmt: skip


def probe(model_dir: str | Path, n: int = 64, seed: int = 5) -> dict[str, float]:
    bundle = load_bundle(model_dir)
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    collate = LlavaCollator(tokenizer.pad_token_id)
    rng = random.Random(seed)
    scores = {}
    for name, ask in PROBES.items():
        items = []
        for _ in range(n):
            scene = world.random_scene(rng)
            qa = ask(scene, rng)
            turns = [
                {"from": "human", "value": "<image>\n" + questions.prompt_text(qa)},
                {"from": "gpt", "value": qa.answer},
            ]
            encoded = encode_conversation(tokenizer, turns, bundle.meta.template,
                                          num_image_tokens=bundle.meta.image_tokens, max_length=512)  # fmt: skip
            image = pixel_values(bundle.image_processor, [world.render_scene(scene, 96)], "pad")[0]
            items.append({"input_ids": torch.tensor(encoded["input_ids"]), "labels": torch.tensor(encoded["labels"]),
                          "pixel_values": image})  # fmt: skip
        batch = collate(items)
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        targets = batch["labels"][:, 1:]
        first = (targets != -100).float().argmax(1)  # the answer's first token
        rows = torch.arange(len(items))
        predicted = logits[:, :-1].argmax(-1)[rows, first]
        scores[name] = round((predicted == targets[rows, first]).float().mean().item(), 3)
    return scores


def train_longer(start: str, out: Path, epochs: float, kinds: list[str] | None) -> Path:
    from llava_more.config import load_params
    from llava_more.train import TrainConfig
    from llava_more.train.trainer import train_stage

    data = INSTRUCT / "clean.json"
    if kinds:
        records = [r for r in json.loads(data.read_text()) if r["id"].split("-")[0] in kinds]
        data = out / "subset.json"
        out.mkdir(parents=True, exist_ok=True)
        data.write_text(json.dumps(records))
    cfg = TrainConfig.from_protocol(load_params("params.yaml").protocols["demo"].stage2).replace(
        epochs=epochs
    )
    shutil.rmtree(out / "model", ignore_errors=True)
    train_stage(2, start, data, INSTRUCT / "raw" / "images", out / "model", out / "work", cfg)
    return out / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a trained bundle to probe")
    ap.add_argument("--train-from", help="a bundle to train stage 2 from (the demo protocol, --epochs)")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument(
        "--kinds", help="train only on these conversation kinds of the demo mix (comma-separated)"
    )
    ap.add_argument("--out", default="/tmp/demo-learning")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.train_from:
        kinds = args.kinds.split(",") if args.kinds else None
        model = train_longer(args.train_from, Path(args.out), args.epochs, kinds)
    elif args.model:
        model = args.model
    else:
        ap.error("give --model or --train-from")
    print(json.dumps({"model": str(model), "first_token_accuracy": probe(model)}, indent=1))


if __name__ == "__main__":
    main()
