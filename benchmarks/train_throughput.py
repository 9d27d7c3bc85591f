"""Training throughput of the three batchings, on the same samples, in one process.

    python benchmarks/train_throughput.py --size tiny --stage 2 --steps 5            # CPU, tiny twins
    python benchmarks/train_throughput.py --size real --llm gemma2-2b \\
        --vision siglip2-so400m-384 --stage 2 --dtype bf16 --per-device 8 --steps 5  # one GPU

Every batching runs the same optimizer steps (``--group`` samples each, in the length-grouped
sampler's order), one forward and backward per micro-batch and one optimizer step per step; steps
are timed whole. Batchings of ``--per-device`` samples per micro-batch:
- ``padded-full``: LLaVA's reference layout, right-padded length-grouped micro-batches and logits at
  every position (the baseline);
- ``padded``: the same micro-batches, logits only where a supervised token follows (what
  ``LlavaTrainer`` does);
- ``packed-mask``: ``PackedCollator`` rows (padding-free, per-sample position ids) with the same
  loss, through transformers' block-diagonal mask (what SDPA/eager get without help);
- ``packed``: the same rows through ``model/varlen_attention.py`` (what ``LlavaTrainer`` uses for
  packed runs unless the model runs flash-attention, which reads packed rows itself);
and, with ``--micro-tokens``, ``packed-budget``: the same steps split into micro-batches of a
variable number of samples within that many tokens (``TokenBudgetBatches``), packed as above; with
``--fused-loss``, ``packed-fused`` (and ``packed-budget-fused``): the same as ``packed``
(``packed-budget``) with the LM head and loss fused in chunks (``train/fused_loss.py``). On a GPU each
batching also reports its peak allocated memory.

Samples are synthetic token sequences with the length distribution of ``--lengths``:
- ``665k``: a model of LLaVA-665K's stage-2 mix built from its published composition (the sources
  and counts in ``SOURCES_665K``), with per-source text lengths as stated there; every image sample
  also holds the encoder's image tokens. Stage 1 uses ``558k``: one caption of 10-40 tokens.
- ``demo``: the token lengths of the demo study's instruction data, encoded with its tokenizer.

MFU counts 6 FLOPs per token and trained parameter, 4 per token and frozen LLM parameter that
gradients flow through (stage 1), 2 per frozen vision parameter and image patch, plus attention
(12 x layers x hidden x attended keys per token), against the peak of a large matmul measured here
in the run's dtype.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass

import torch

from llava_more.model import get_llm, get_vision
from llava_more.model.builder import build_llava
from llava_more.model.describe import count_parameters
from llava_more.model.freezing import freeze_for_stage
from llava_more.model.llm import SIZES
from llava_more.text.encode import IGNORE_INDEX
from llava_more.train.dataset import LlavaCollator
from llava_more.train.packing import PackedCollator, packed_slots, padded_slots, training_inputs
from llava_more.train.patches import training_patches
from llava_more.train.sampler import SeededGroupedSampler, TokenBudgetBatches

IMAGE_TOKEN_ID, PAD_ID = 1, 0


@dataclass(frozen=True)
class Source:
    """One part of the 665K mix: how many samples, and its text length model (tokens)."""

    name: str
    count: int
    image: bool
    turns: tuple[int, int]  # question-answer turns per sample (uniform)
    question: tuple[int, int]  # tokens per question (uniform), prompt scaffolding included
    answer: tuple[int, int]  # tokens per answer (uniform)


# Counts: the 665K composition (LLaVA-1.5 paper, Table 7; image sources sum to 624K + 40.7K text).
# Turn and token ranges: approximations of each source's format as LLaVA-1.5 packs it (many short
# VQA questions per image; long free-form answers for LLaVA-Instruct; long ShareGPT chats).
SOURCES_665K = (
    Source("llava-instruct-conversation", 58_000, True, (2, 8), (10, 30), (30, 120)),
    Source("llava-instruct-detail", 23_000, True, (1, 1), (8, 15), (80, 200)),
    Source("llava-instruct-reasoning", 77_000, True, (1, 2), (15, 40), (80, 250)),
    Source("vqav2", 83_000, True, (3, 10), (15, 25), (1, 3)),
    Source("gqa", 72_000, True, (3, 10), (15, 30), (1, 3)),
    Source("okvqa+a-okvqa", 75_000, True, (1, 3), (15, 30), (1, 4)),
    Source("ocrvqa", 80_000, True, (3, 8), (15, 25), (2, 8)),
    Source("textcaps", 22_000, True, (1, 1), (10, 15), (10, 30)),
    Source("refcoco", 48_000, True, (3, 10), (15, 25), (10, 20)),
    Source("visual-genome", 86_000, True, (3, 10), (15, 25), (10, 20)),
    Source("sharegpt", 40_688, False, (1, 6), (20, 200), (50, 400)),
)


def sample_lengths_665k(
    n: int, rng: random.Random, image_tokens: int, max_length: int
) -> list[tuple[int, int, bool]]:
    """``n`` samples as (total tokens, supervised tokens, has image), drawn by the mix's counts."""
    weights = [s.count for s in SOURCES_665K]
    out = []
    for source in rng.choices(SOURCES_665K, weights, k=n):
        total = supervised = 0
        for _ in range(rng.randint(*source.turns)):
            answer = rng.randint(*source.answer)
            total += rng.randint(*source.question) + answer + 1
            supervised += answer + 1
        total += 20 + (image_tokens if source.image else 0)  # system prompt and template
        if total > max_length:
            supervised = max(1, supervised - (total - max_length))
            total = max_length
        out.append((total, supervised, source.image))
    return out


def sample_lengths_558k(n: int, rng: random.Random, image_tokens: int) -> list[tuple[int, int, bool]]:
    out = []
    for _ in range(n):
        caption = rng.randint(10, 40)
        out.append((image_tokens + caption + 2, caption + 1, True))
    return out


def sample_lengths_demo(n: int, rng: random.Random, image_tokens: int) -> list[tuple[int, int, bool]]:
    """Lengths of the demo's instruction data (data/instruct/demo-instruct) with the demo tokenizer."""
    from transformers import AutoTokenizer

    from llava_more.data.llava_json import LlavaJsonDataset
    from llava_more.text.encode import encode_conversation
    from llava_more.text.tokenizer import apply_template
    from llava_more.train.dataset import with_image_token

    tokenizer = apply_template(AutoTokenizer.from_pretrained("runs/demo/tokenizer"), "llama3.1")
    data = LlavaJsonDataset(
        "data/instruct/demo-instruct/clean.json", "data/instruct/demo-instruct/raw/images"
    )
    out = []
    for record in rng.sample(data.records, min(n, len(data.records))):
        has_image = record.get("image") is not None
        enc = encode_conversation(tokenizer, with_image_token(record["conversations"], has_image), "llama3.1",
                                  num_image_tokens=image_tokens, max_length=4096)  # fmt: skip
        out.append((len(enc["input_ids"]), sum(1 for x in enc["labels"] if x != IGNORE_INDEX), has_image))
    return out


def make_sample(total: int, supervised: int, has_image: bool, image_tokens: int, vocab: int,
                image_size: int, rng: random.Random) -> dict[str, torch.Tensor]:  # fmt: skip
    ids = torch.tensor([rng.randrange(2, vocab) for _ in range(total)])
    labels = torch.full((total,), IGNORE_INDEX)
    labels[total - supervised :] = ids[total - supervised :]
    sample = {"input_ids": ids, "labels": labels}
    if has_image:
        ids[1 : 1 + image_tokens] = IMAGE_TOKEN_ID
        sample["pixel_values"] = torch.randn(3, image_size, image_size)
    return sample


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul in ``dtype`` (best of several runs)."""
    size = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = 0.0
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * size**3 / (time.perf_counter() - start))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(model, stage: int, lengths: list[tuple[int, int, bool]], image_tokens: int) -> float:
    """Useful FLOPs of one optimizer step over these samples (no padding, no recomputation)."""
    text = model.config.text_config
    llm = count_parameters([model.model.language_model, model.lm_head])
    projector = count_parameters([model.model.multi_modal_projector])
    vision = count_parameters([model.model.vision_tower])
    tokens = sum(t for t, _, _ in lengths)
    images = sum(1 for _, _, i in lengths if i)
    per_token_llm = (6 if stage == 2 else 4) * llm
    attention = sum(12 * text.num_hidden_layers * text.hidden_size * t * (t + 1) / 2 for t, _, _ in lengths)
    return (
        per_token_llm * tokens
        + attention
        + 6 * projector * images * image_tokens
        + 2 * vision * images * image_tokens
    )


def micro_batch_plans(signed: list[int], args) -> tuple[list[list[int]], dict[str, list[list[list[int]]]]]:
    """The run's full steps, and each batching's micro-batches for every step."""
    grouped = args.stage == 2  # stage 2 groups by modality and length (LLaVA-1.5); stage 1 does not
    order = SeededGroupedSampler(signed, seed=0, group_by_length=grouped, group_size=args.group).order(0)
    steps = [order[i : i + args.group] for i in range(0, len(order) - args.group + 1, args.group)]
    fixed = [[step[i : i + args.per_device] for i in range(0, len(step), args.per_device)] for step in steps]
    plans = {"padded-full": fixed, "padded": fixed, "packed-mask": fixed, "packed": fixed}
    if args.micro_tokens:
        budget = TokenBudgetBatches(signed, seed=0, group_by_length=grouped, global_batch=args.group,
                                    micro_tokens=args.micro_tokens)  # fmt: skip
        plans["packed-budget"] = budget.step_batches(0)[: len(steps)]
    if args.fused_loss:
        plans.update({f"{name}-fused": plans[name] for name in ("packed", "packed-budget") if name in plans})
    return steps, plans


def slots(name: str, sizes: list[int], row_tokens: int) -> int:
    return packed_slots(sizes, row_tokens) if name.startswith("packed") else padded_slots(sizes)


def padding_report(plans: dict, lengths: list[tuple[int, int, bool]], args) -> dict:
    """Padding fraction of each layout over every step (token slots that hold no sample token)."""
    row_tokens = args.row_tokens or 10**9
    any_plan = next(iter(plans.values()))
    real = sum(lengths[i][0] for step in any_plan for mb in step for i in mb)
    samples = sum(len(mb) for step in any_plan for mb in step)
    supervised = sum(lengths[i][1] for step in any_plan for mb in step for i in mb)
    report = {"args": vars(args), "samples": samples, "mean_tokens": round(real / samples, 1),
              "supervised_fraction": round(supervised / real, 4), "padding_fraction": {},
              "micro_batches_per_step": {}}  # fmt: skip
    for name in ("padded", "packed", "packed-budget"):
        if name in plans:
            used = sum(
                slots(name, [lengths[i][0] for i in mb], row_tokens) for st in plans[name] for mb in st
            )
            report["padding_fraction"][name] = round(1 - real / used, 4)
            report["micro_batches_per_step"][name] = round(statistics.mean(map(len, plans[name])), 2)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--llm", default="phi4-mini")
    ap.add_argument("--vision", default="clip-l-336")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=2)
    ap.add_argument("--lengths", choices=("665k", "demo"), default="665k")
    ap.add_argument("--per-device", type=int, default=16, help="samples per micro-batch")
    ap.add_argument("--group", type=int, default=128, help="length-grouping group (the global batch)")
    ap.add_argument(
        "--row-tokens", type=int, default=0, help="packed row budget (0: one row per micro-batch)"
    )
    ap.add_argument(
        "--micro-tokens",
        type=int,
        default=0,
        help="also run packed-budget: micro-batches within this many tokens (0: skip it)",
    )
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps timed per batching")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, ...)")
    ap.add_argument(
        "--padding-only",
        action="store_true",
        help="only the padding fractions over a whole epoch of --samples samples (no model)",
    )
    ap.add_argument("--samples", type=int, default=20_000, help="--padding-only: samples drawn")
    ap.add_argument(
        "--fused-loss", action="store_true", help="also run the packed batchings with the fused loss"
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    rng = random.Random(0)
    spec_v = get_vision(args.vision)
    image_tokens = spec_v.image_tokens(args.size)
    image_size = spec_v.image_size(args.size)
    vocab = get_llm(args.llm).config(args.size).vocab_size

    n = args.samples if args.padding_only else args.group * (args.steps + args.warmup + 1)
    if args.stage == 1:
        lengths = sample_lengths_558k(n, rng, image_tokens)
    elif args.lengths == "demo":
        lengths = sample_lengths_demo(n, rng, image_tokens)
    else:
        lengths = sample_lengths_665k(n, rng, image_tokens, args.max_length)
    signed = [t if img else -t for t, _, img in lengths]
    steps, plans = micro_batch_plans(signed, args)
    if args.padding_only:
        print(json.dumps(padding_report(plans, lengths, args), indent=1))
        return
    steps = steps[: args.warmup + args.steps]

    model = build_llava(args.llm, args.vision, size=args.size, vocab_size=vocab, image_token_id=IMAGE_TOKEN_ID,
                        pad_token_id=PAD_ID)  # fmt: skip
    model.set_attn_implementation(args.attn)
    model.to(device=device, dtype=dtype)
    freeze_for_stage(model, args.stage)
    model.train()
    if args.size == "real":
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    samples = {i: make_sample(*lengths[i], image_tokens, vocab, image_size, rng) for st in steps for i in st}
    row_tokens = args.row_tokens or 10**9
    collators = {
        "padded-full": LlavaCollator(pad_token_id=PAD_ID),
        "padded": LlavaCollator(pad_token_id=PAD_ID),
        "packed-mask": PackedCollator(PAD_ID, row_tokens),
        "packed": PackedCollator(PAD_ID, row_tokens),
        "packed-budget": PackedCollator(PAD_ID, row_tokens),
    }
    collators.update({f"{name}-fused": collators[name] for name in ("packed", "packed-budget")})
    peak = matmul_peak(device, dtype)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "args": vars(args),
               "matmul_peak_tflops": round(peak / 1e12, 3), "batchings": {}}  # fmt: skip
    for name, plan in plans.items():
        collate = collators[name]
        varlen = name.startswith("packed") and name != "packed-mask"
        with training_patches(model, packing=varlen, fused_loss=name.endswith("-fused")):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, n_samples, n_tokens, flops, used = [], 0, 0, 0.0, 0
            for index, micro_batches in enumerate(plan[: len(steps)]):
                step_ids = [i for mb in micro_batches for i in mb]
                supervised = sum(lengths[i][1] for i in step_ids)  # the step's loss is a mean over these
                sync(device)
                start = time.perf_counter()
                for mb in micro_batches:
                    batch = collate([samples[i] for i in mb])
                    batch = {k: v.to(device) for k, v in batch.items()}
                    if "pixel_values" in batch:
                        batch["pixel_values"] = batch["pixel_values"].to(dtype)
                    if name == "padded-full":
                        loss = model(**batch, use_cache=False, num_items_in_batch=supervised).loss
                    else:
                        loss = model(**training_inputs(batch), num_items_in_batch=supervised).loss
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sync(device)
                if index >= args.warmup:
                    times.append(time.perf_counter() - start)
                    n_samples += len(step_ids)
                    n_tokens += sum(lengths[i][0] for i in step_ids)
                    flops += step_flops(model, args.stage, [lengths[i] for i in step_ids], image_tokens)
                    used += sum(slots(name, [lengths[i][0] for i in mb], row_tokens) for mb in micro_batches)
        seconds = sum(times)
        results["batchings"][name] = {
            "samples_per_s": round(n_samples / seconds, 3),
            "tokens_per_s": round(n_tokens / seconds, 1),
            "padding_fraction": round(1 - n_tokens / used, 4),
            "micro_batches_per_step": round(statistics.mean(map(len, plan[args.warmup : len(steps)])), 2),
            "mfu": round(flops / seconds / peak, 4),
            "median_step_s": round(statistics.median(times), 4),
        }
        if device.type == "cuda":
            results["batchings"][name]["peak_memory_GiB"] = round(
                torch.cuda.max_memory_allocated() / 2**30, 2
            )
    base = results["batchings"]["padded-full"]["samples_per_s"]
    for entry in results["batchings"].values():
        entry["speedup"] = round(entry["samples_per_s"] / base, 3)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
