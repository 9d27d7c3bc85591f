"""The plan as the text table ``llava-more plan`` prints (``--json`` prints ``Plan.to_dict`` instead)."""

from __future__ import annotations

from llava_more.pipeline.cost import GPUS
from llava_more.pipeline.plan import Plan


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def render_table(plan: Plan) -> str:
    a = plan.assumptions
    gpu = GPUS[a.gpu]
    rate = (
        f"a measured {a.throughput:g} tokens/s per GPU"
        if a.throughput
        else f"{gpu.name} ({gpu.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16) at MFU {a.mfu:g}"
    )
    lines = [
        f"Plan for study {plan.study!r} ({plan.size} models): {len(plan.jobs)} jobs; GPU-hours on {rate}.",
        "",
        f"{'stage':<7} {'experiment':<48} {'samples':>8} {'tokens':>8} {'PFLOP':>9} {f'{gpu.name}-h':>8}"
        f" {'local':>5} {'remote':>6}",
    ]
    for job in plan.jobs:
        if job.kind == "other":
            continue
        pflop = (
            f"{job.flops / 1e15:,.0f}"
            if job.flops is not None and job.flops >= 1e15
            else ("-" if job.flops is None else f"{job.flops / 1e15:.2g}")
        )
        name = (
            f"{job.experiment} (stage-1 model)" if job.kind == "eval" and job.stage == 1 else job.experiment
        )
        lines.append(
            f"{job.kind:<7} {name:<48} {_count(job.samples):>8} {_count(job.tokens):>8} {pflop:>9}"
            f" {_hours(job.gpu_hours):>8} {_yes(job.local):>5} {_yes(job.remote):>6}"
        )
    totals = plan.totals()
    lines += ["", f"{'totals':<7} {'jobs':>5} {f'{gpu.name}-h':>9} {'to run':>9} {'local':>6} {'remote':>7}"]
    for kind, t in totals.items():
        lines.append(
            f"{kind:<7} {t['jobs']:>5} {_hours(t['gpu_hours']) if kind != 'other' else '-':>9}"
            f" {_hours(t['gpu_hours_to_run']) if kind != 'other' else '-':>9} {t['local']:>6} {t['remote']:>7}"
        )
    other = sorted({j.rule for j in plan.jobs if j.kind == "other"})
    lines += [
        "",
        f"'other' jobs ({', '.join(other) or 'none'}) are not priced (data, initial models, imports, the report).",
        f"Estimates, not measurements: mean text tokens {a.stage1_text_tokens:g} (stage 1) and "
        f"{a.stage2_text_tokens:g} (stage 2) per sample; evaluation at {a.eval_sample_seconds:g} A100-s per "
        "sample for a 7B model. See `llava-more plan --help`.",
    ]
    lines += [f"Note: {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"
