"""Padding and step time when one optimizer step's samples are split into smaller micro-batches.

    python benchmarks/micro_batch_split.py --model runs/demo/stage1/llama3.1-8b_clip-l-336_demo-lcs \\
        --data data/instruct/demo-instruct --steps 12 --micro 32,16,8,packed:32,packed:8,budget:2048

The steps come from the trainer's own sampler (``SeededGroupedSampler`` with length grouping, one
group per step), so every split sees the same samples per step, sorted by length; a split only
changes how much padding each micro-batch carries. Samples are encoded exactly as stage 2 encodes
them (the bundle's chat template, the protocol's ``max_length``, ``LlavaTrainDataset``). Each step runs forward and backward over
all of its micro-batches on one thread; the report gives padded token slots per step, the real
tokens, and the median seconds per step (the first step of each split is a warm-up), with the ratio
against the first split listed.

A split is ``N`` (padded micro-batches of N samples), ``packed:N`` (the same micro-batches packed
into one row each, through the trainer's variable-length attention) or ``budget:T`` (the step split
by ``TokenBudgetBatches`` into micro-batches within T tokens, packed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from llava_more.config import load_params
from llava_more.data.llava_json import LlavaJsonDataset
from llava_more.model.bundle import load_bundle
from llava_more.train.dataset import LlavaCollator, LlavaTrainDataset
from llava_more.train.packing import PackedCollator, training_inputs
from llava_more.train.patches import training_patches
from llava_more.train.sampler import SeededGroupedSampler, TokenBudgetBatches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a bundle (stage 1 output) to train from")
    ap.add_argument(
        "--data", required=True, type=Path, help="an instruction dataset folder (clean.json, raw/images)"
    )
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument(
        "--micro",
        default="32,16,8",
        help="splits to compare: N, packed:N, budget:T (the first is the baseline)",
    )
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--protocol", default="demo", help="params.yaml protocol whose stage-2 max_length applies"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    stage2 = load_params("params.yaml").protocols[args.protocol].stage2
    bundle = load_bundle(args.model)
    model = bundle.model.train()
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    dataset = LlavaTrainDataset(
        LlavaJsonDataset(args.data / "clean.json", args.data / "raw" / "images"),
        bundle.tokenizer, bundle.image_processor, template_id=bundle.meta.template,
        num_image_tokens=bundle.meta.image_tokens, max_length=stage2.max_length, image_aspect_ratio="pad",
    )  # fmt: skip
    order = SeededGroupedSampler(
        dataset.lengths, seed=0, group_by_length=True, group_size=args.global_batch
    ).order(0)
    steps = [
        order[i : i + args.global_batch] for i in range(0, args.steps * args.global_batch, args.global_batch)
    ]
    samples = {i: dataset[i] for step in steps for i in step}  # decode once, outside the timing
    padded = LlavaCollator(bundle.tokenizer.pad_token_id)
    packed = PackedCollator(bundle.tokenizer.pad_token_id, row_tokens=1 << 40)
    real = statistics.mean(sum(abs(dataset.lengths[i]) for i in step) for step in steps)

    results = []
    for split in args.micro.split(","):
        kind, _, size = split.rpartition(":")
        size = int(size)
        if kind == "budget":
            budget = TokenBudgetBatches(dataset.lengths, seed=0, group_by_length=True,
                                        global_batch=args.global_batch, micro_tokens=size)  # fmt: skip
            plan = budget.step_batches(0)[: len(steps)]
        else:
            plan = [[step[k : k + size] for k in range(0, len(step), size)] for step in steps]
        collate = padded if kind == "" else packed
        with training_patches(model, packing=bool(kind), fused_loss=False):
            slots, seconds = [], []
            for micro_batches in plan:
                start = time.perf_counter()
                total = 0
                for mb in micro_batches:
                    batch = collate([samples[i] for i in mb])
                    total += batch["input_ids"].numel()
                    model(**training_inputs(batch)).loss.backward()
                model.zero_grad(set_to_none=True)
                seconds.append(time.perf_counter() - start)
                slots.append(total)
        results.append({"split": split, "micro_batches_per_step": round(statistics.mean(map(len, plan)), 2),
                        "slots_per_step": round(statistics.mean(slots)),
                        "real_tokens_per_step": round(real), "padding": round(1 - real / statistics.mean(slots), 3),
                        "s_per_step": round(statistics.median(seconds[1:]), 3)})  # fmt: skip
    for r in results:
        r["speed_vs_first"] = round(results[0]["s_per_step"] / r["s_per_step"], 2)
        print(json.dumps(r))


if __name__ == "__main__":
    main()
