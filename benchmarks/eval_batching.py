"""Batched vs batch-1 generation through real lmms-eval: samples/s and whether the answers agree.

    python benchmarks/eval_batching.py --model runs/demo/stage2/<exp> --tasks demo_gqa,demo_pope \
        --include-path data/benchmarks/demo --batch-sizes 1,8

Runs `llava-more evaluate` once per batch size (same process tree, same machine, back to back),
times each run's generation (lmms-eval's own wall time excluded from start-up by timing the whole
command and subtracting a `--limit 1` warm run), and compares every logged answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def evaluate(model: str, tasks: str, include: str, batch: int, out: Path, limit: int | None) -> float:
    cmd = [sys.executable, "-m", "llava_more", "evaluate", "--model", model, "--tasks", tasks,
           "--include-path", include, "--batch-size", str(batch), "--max-new-tokens", "16", "--out", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - start


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
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first_task = args.tasks.split(",")[0]  # start-up: imports and model load, one question
        startup = evaluate(args.model, first_task, args.include_path, 1, tmp / "warm", limit=1)
        rows, results = [], {}
        for batch in sizes:
            wall = evaluate(args.model, args.tasks, args.include_path, batch, tmp / f"b{batch}", None)
            results[batch] = answers(tmp / f"b{batch}")
            n = len(results[batch])
            rows.append((batch, n, wall, n / max(wall - startup, 1e-9)))
        base = results[sizes[0]]
        print(f"start-up (limit 1): {startup:.1f} s")
        print("| batch | samples | wall s | samples/s (excl. start-up) | speed-up | answers identical to batch 1 |")
        print("|---:|---:|---:|---:|---:|---|")
        for batch, n, wall, rate in rows:
            same = results[batch] == base
            print(f"| {batch} | {n} | {wall:.1f} | {rate:.1f} | {rate / rows[0][3]:.2f}x | {same} |")


if __name__ == "__main__":
    main()
