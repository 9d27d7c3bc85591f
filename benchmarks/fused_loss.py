"""Memory and time of the LM head plus its loss: transformers' plain path against the fused, chunked one.

    python benchmarks/fused_loss.py --llm gemma2-2b --positions 512 --repeats 3

Real-size heads (hidden size, vocabulary, Gemma-2's soft-capping) from the LLM registry, random
weights; ``--positions`` supervised positions, as one micro-batch hands the head (``training_inputs``
keeps only those). Each path runs in a fresh process: the head's weight and the hidden states are
allocated first, then one forward and backward is the memory measurement (on a GPU the peak of
``torch.cuda.max_memory_allocated``, on the CPU the growth of the peak resident set), then
``--repeats`` timed forward+backward passes. ``plain`` is what the model's forward does without
``fused_loss``: the head over all kept positions, a float copy of the logits, soft-capping,
cross-entropy. The report gives both paths' peak extra memory, and that less the gradients of the
head's weight and input which both must hold (the working memory), median seconds, the ratios, and
the largest difference between their losses and gradients.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from llava_more.model.llm import get_llm
from llava_more.train.fused_loss import linear_cross_entropy

PATHS = ("plain", "fused")


def plain_loss(hidden, weight, targets, softcap):
    logits = nn.functional.linear(hidden, weight).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return nn.functional.cross_entropy(logits, targets)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def worker(args: argparse.Namespace) -> dict:
    config = get_llm(args.llm).config("real")
    softcap = getattr(config, "final_logit_softcapping", None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    # Drawn in place: a temporary copy would raise the process's peak above what the step uses.
    weight = torch.empty(config.vocab_size, config.hidden_size, device=device, dtype=dtype)
    weight.normal_(0, 0.02).requires_grad_()
    hidden = torch.empty(args.positions, config.hidden_size, device=device, dtype=dtype)
    hidden.normal_().requires_grad_()
    targets = torch.randint(0, config.vocab_size, (args.positions,), device=device)

    def step() -> float:
        weight.grad = hidden.grad = None
        if args.path == "plain":
            loss = plain_loss(hidden, weight, targets, softcap)
        else:
            loss = linear_cross_entropy(hidden, weight, None, targets, softcap=softcap)
        loss.backward()
        return float(loss.detach())

    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resident_bytes()
    loss = step()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    seconds = []
    for _ in range(args.repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    grads = {"hidden": hidden.grad.float().cpu(), "weight": weight.grad.float().cpu()}
    torch.save(grads, args.grads_out)
    return {"path": args.path, "loss": loss, "peak_extra_bytes": peak, "seconds": seconds, "device": device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="gemma2-2b", help="an LLM id of the registry (real-size head)")
    ap.add_argument("--positions", type=int, default=512, help="supervised positions in the micro-batch")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # set for the worker processes
    ap.add_argument("--grads-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.path:
        print(json.dumps(worker(args)))
        return

    results, grads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in PATHS:
            out = Path(tmp) / f"{path}.pt"
            command = [sys.executable, __file__, *sys.argv[1:], "--path", path, "--grads-out", str(out)]
            done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
            results[path] = json.loads(done.stdout.strip().splitlines()[-1])
            grads[path] = torch.load(out)
    config = get_llm(args.llm).config("real")
    report = {
        "llm": args.llm,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "positions": args.positions,
        "dtype": args.dtype,
        "device": results["plain"]["device"],
        "threads": args.threads,
    }
    # Both paths must hold the gradients of the head's weight and input; the rest is working memory.
    gradient_bytes = (
        (config.vocab_size + args.positions)
        * config.hidden_size
        * torch.finfo(getattr(torch, args.dtype)).bits
        // 8
    )
    report["gradients_MiB"] = round(gradient_bytes / 2**20)
    for path in PATHS:
        report[f"{path}_peak_extra_MiB"] = round(results[path]["peak_extra_bytes"] / 2**20)
        report[f"{path}_working_MiB"] = round((results[path]["peak_extra_bytes"] - gradient_bytes) / 2**20)
        report[f"{path}_median_s"] = round(statistics.median(results[path]["seconds"]), 3)
        report[f"{path}_seconds"] = [round(s, 3) for s in results[path]["seconds"]]
    report["working_memory_ratio_plain_over_fused"] = round(
        report["plain_working_MiB"] / max(report["fused_working_MiB"], 1), 2
    )
    report["speed_ratio_fused_over_plain"] = round(report["plain_median_s"] / report["fused_median_s"], 3)
    report["loss_difference"] = abs(results["plain"]["loss"] - results["fused"]["loss"])
    for name in ("hidden", "weight"):
        a, b = grads["plain"][name], grads["fused"][name]
        report[f"{name}_grad_max_relative_difference"] = float((a - b).abs().max() / a.abs().max())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
