"""Batched vs batch-1 generation through real lmms-eval: samples/s and whether the answers agree.

    python benchmarks/eval_batching.py --model runs/demo/stage2/<exp> --tasks demo_gqa,demo_pope \\
        --include-path data/benchmarks/demo --batch-sizes 1,8 --repeats 3

Runs `llava-more evaluate` once per batch size and repeat (back to back, same machine) and reads
the timing line the lmms-eval plugin logs for every `generate_until` call: the seconds spent
preparing requests (image loading, prompt rendering) and the seconds spent in batched generation
(padding, the forward passes, decoding). Samples/s count generation only, summed over the tasks;
the median over repeats is reported. Every logged answer is compared with batch 1's.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TIMING = re.compile(
    r"generate_until timing: (\d+) requests at batch (\d+): prepare ([\d.]+) s, generate ([\d.]+) s"
)


def evaluate(
    model: str, tasks: str, include: str, batch: int, out: Path, device: str, dtype: str
) -> tuple[int, float, float]:
    """One real evaluation; returns (requests, prepare seconds, generate seconds) over its tasks."""
    cmd = [sys.executable, "-m", "llava_more", "evaluate", "--model", model, "--tasks", tasks,
           "--include-path", include, "--batch-size", str(batch), "--max-new-tokens", "16", "--out", str(out),
           "--device", device, "--dtype", dtype]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"evaluate failed ({run.returncode}):\n{run.stderr[-3000:]}")
    log = (out / "lmms_eval.log").read_text()  # the plugin runs inside lmms-eval's own process
    found = [m.groups() for m in TIMING.finditer(log)]
    if not found:
        sys.exit(f"no generate_until timing line in {out / 'lmms_eval.log'}")
    return (
        sum(int(n) for n, *_ in found),
        sum(float(p) for *_, p, _ in found),
        sum(float(g) for *_, g in found),
    )


def answers(out: Path) -> dict[tuple[str, int], str]:
    found = {}
    for path in sorted(out.rglob("*_samples_*.jsonl")):
        task = path.stem.split("_samples_")[1]
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            resp = rec["filtered_resps"]
            found[(task, rec["doc_id"])] = resp[0] if isinstance(resp, list) else resp
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", default="demo_gqa,demo_pope")
    ap.add_argument("--include-path", default="data/benchmarks/demo")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto (a GPU when one is usable), cpu, cuda[:N]")
    ap.add_argument("--dtype", default="auto", help="auto (the bundle's), float32, bfloat16 (GPU)")
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for repeat in range(args.repeats):
            for batch in sizes:  # interleaved, so drift in machine speed hits every batch size alike
                out = tmp / f"b{batch}-r{repeat}"
                n, prepare, generate = evaluate(
                    args.model, args.tasks, args.include_path, batch, out, args.device, args.dtype
                )
                rows.setdefault(batch, []).append((n, prepare, generate))
                got = answers(out)
                results.setdefault(batch, got)
                if got != results[batch]:
                    sys.exit(f"batch {batch}: answers changed between repeats")
    base = results[sizes[0]]
    rate = {b: statistics.median(n / g for n, _, g in rows[b]) for b in sizes}
    print(f"{args.repeats} repeat(s); generation samples/s is the median over repeats")
    print(
        "| batch | samples | prepare s | generate s (each repeat) | generation samples/s | speed-up | answers identical to batch 1 |"
    )
    print("|---:|---:|---:|---|---:|---:|---|")
    for b in sizes:
        n = rows[b][0][0]
        prepare = statistics.median(p for _, p, _ in rows[b])
        gens = ", ".join(f"{g:.2f}" for *_, g in rows[b])
        print(
            f"| {b} | {n} | {prepare:.2f} | {gens} | {rate[b]:.1f} | {rate[b] / rate[sizes[0]]:.2f}x | {results[b] == base} |"
        )


if __name__ == "__main__":
    main()
