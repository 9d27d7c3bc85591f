"""``llava-more plan``: a study's jobs, what each costs in GPU-hours, and what is already built.

The job list is the Snakemake DAG itself (the forced dry run of :func:`snakemake_jobs`, the same one
``dvc.yaml`` is generated from), so the plan can never list jobs the pipeline would not run. Model
sizes come from :func:`describe_model` (the real architecture built on the meta device).

Everything below is an **estimate** for budgeting, not a measurement.

Training cost model (model FLOPs, the convention MFU is quoted in: gradient-checkpointing
recomputation and attention's sequence-squared term are left out, and a realistic MFU absorbs them).
Per training sequence of ``L`` tokens (``I`` of them image tokens):

* LLM, ``N_llm`` = its parameters minus an untied input-embedding table (a lookup costs no matmul
  FLOPs; a tied table is the output head, so it counts):
  stage 2 trains it, ``6 * N_llm * L`` (forward 2N, backward 2N for activations + 2N for weights);
  stage 1 freezes it but the projector's gradient flows back through it, ``4 * N_llm * L``
  (forward 2N + backward through activations 2N, no weight gradients).
* projector (trained in both stages; it sees only image tokens): ``6 * N_proj * I``.
* vision encoder (frozen, forward only): ``2 * N_vis * I * passes``, where ``passes`` is 1, or with
  S2 the number of base-size tiles over all scales (1 + 4 + 9 = 14 for three scales).

A stage's FLOPs are that per-sequence cost times ``samples * epochs``. GPU-hours are
``FLOPs / (peak bf16 FLOP/s * MFU) / 3600`` (peaks: A100 312e12, H100 989e12; MFU default 0.35,
the range dense 7-8B training reaches), or, given a measured ``--throughput`` in tokens/s per GPU,
``tokens / throughput / 3600`` whatever the model.

Sequence length ``L = image_fraction * I + text_tokens``, capped at the protocol's ``max_length``.
The mean text tokens per sample are assumptions, not counts: stage 1 ``60`` (a short caption in the
plain format, generous for BLIP captions), stage 2 ``300`` (the 665K mix's multi-turn VQA, chat,
and ~6% long text-only ShareGPT conversations). Sample counts come from ``params.yaml`` (``size``)
or the published sizes: LCS-558K 558,128; LLaVA-665K 665,298, of which 40,688 have no image.

Sanity check: for LLaVA-1.5-7B (Vicuna-7B x CLIP-L/336) on A100 the defaults give ~24.5 + ~57
A100-hours against the published ~3.5 h + 10 h on 8 A100s (~28 + 80 = 108): stage 1 within 12%,
stage 2 29% low. The text lengths were left as they are: the gap looks like efficiency rather
than tokens (that run reached an MFU of ~0.31 in stage 1 and ~0.25 in stage 2, with ZeRO-3,
padding to the longest sample of a batch and recomputation). ``--mfu 0.26`` gives a conservative budget for that code path.

A published study (``kind: published``) trains nothing: its jobs are imports of released checkpoints
(unpriced, like data jobs) and evaluations, so its plan is evaluation GPU-hours only.

Evaluation: benchmark samples times ``eval_sample_seconds`` (default 0.25 A100-seconds per sample
for a 7B LLaVA at batch 1, from lmms-eval's GQA and MME timings), scaled by the LLM's size and by
memory bandwidth on other GPUs (decoding at batch 1 is bandwidth-bound). A rough constant.

"Cached" means a job's outputs exist in the checkout (Snakemake's mtime view is not consulted), and,
where ``dvc.lock`` exists, whether the DVC remote holds the version it records.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llava_more import paths
from llava_more.config import DataSource, Params, Study
from llava_more.errors import UserError
from llava_more.pipeline.dvc import Job, snakemake_jobs


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_bf16_flops: float  # dense, per second
    memory_bandwidth: float  # bytes per second


GPUS = {
    "a100": Gpu("A100", 312e12, 2.039e12),
    "h100": Gpu("H100", 989e12, 3.35e12),
}

# Published sizes of the real datasets, used when params.yaml gives no `size`.
LCS_558K_SAMPLES = 558_128
LLAVA_665K_SAMPLES = 665_298
LLAVA_665K_TEXT_ONLY = 40_688

# lmms-eval's evaluation splits (approximate counts) of the real benchmark suite.
REAL_TASK_SAMPLES = {
    "gqa": 12_578,
    "scienceqa_img": 2_017,
    "textvqa_val": 5_000,
    "ai2d": 3_088,
    "pope": 9_000,
    "mme": 2_374,
    "mmbench_cn_dev": 4_329,
    "mmbench_en_dev": 4_329,
    "seedbench": 17_990,
    "mmmu_val": 900,
}
# A task of unknown size counts as this many samples (and the plan says so).
UNKNOWN_TASK_SAMPLES = 5_000
# The model the evaluation anchor was timed with (LLaVA-1.5-7B's Vicuna).
EVAL_ANCHOR_LLM_PARAMS = 6.74e9


@dataclass(frozen=True)
class Assumptions:
    """The knobs of the estimate (see the module docstring for what each one means)."""

    gpu: str = "a100"
    mfu: float = 0.35
    throughput: float | None = None  # measured training tokens/s per GPU; overrides gpu and mfu
    stage1_text_tokens: float = 60
    stage2_text_tokens: float = 300
    eval_sample_seconds: float = 0.25  # A100-seconds per benchmark sample for a 7B model

    def check(self) -> Assumptions:
        if self.gpu not in GPUS:
            raise UserError(f"--gpu {self.gpu!r}: unknown GPU; choose one of {', '.join(GPUS)}")
        if not 0 < self.mfu <= 1:
            raise UserError(f"--mfu {self.mfu}: must be in (0, 1], e.g. 0.35")
        if self.throughput is not None and self.throughput <= 0:
            raise UserError(f"--throughput {self.throughput}: must be a positive number of tokens/s per GPU")
        for name in ("stage1_text_tokens", "stage2_text_tokens", "eval_sample_seconds"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must not be negative")
        return self


@dataclass(frozen=True)
class ModelSize:
    """What the cost model needs of one LLaVA model."""

    llm_params: int  # matmul parameters (untied input embeddings excluded)
    vision_params: int
    projector_params: int
    image_tokens: int
    encoder_passes: int  # base-size encoder passes per image: 1, or S2's tiles over all scales


def training_flops(
    model: ModelSize, stage: int, sequences: float, seq_len: float, image_fraction: float = 1.0
) -> float:
    """Model FLOPs of training ``sequences`` sequences of mean length ``seq_len`` in ``stage`` (1 or 2).

    ``image_fraction`` is the share of sequences with an image (text-only ones skip the encoder and
    the projector). Formula in the module docstring.
    """
    llm_factor = {1: 4, 2: 6}[stage]
    image_tokens = image_fraction * model.image_tokens
    per_sequence = (
        llm_factor * model.llm_params * seq_len
        + 6 * model.projector_params * image_tokens
        + 2 * model.vision_params * image_tokens * model.encoder_passes
    )
    return per_sequence * sequences


def mean_sequence_length(
    image_tokens: int, text_tokens: float, image_fraction: float, max_length: int
) -> float:
    return min(image_fraction * image_tokens + text_tokens, max_length)


def gpu_hours_from_flops(flops: float, gpu: Gpu, mfu: float) -> float:
    return flops / (gpu.peak_bf16_flops * mfu) / 3600


# --------------------------------------------------------------------------- the study's data


def pretrain_samples(source: DataSource) -> int:
    if source.get("size") is not None:
        return int(source.get("size"))
    if source.source == "llava-pretrain":
        return LCS_558K_SAMPLES
    raise UserError(
        f"params.yaml pretrain_data.{source.name}: give it a `size` so the plan can count its samples"
    )


def instruct_samples_and_image_fraction(source: DataSource) -> tuple[int, float]:
    if source.source == "llava-instruct":
        return LLAVA_665K_SAMPLES, 1 - LLAVA_665K_TEXT_ONLY / LLAVA_665K_SAMPLES
    size = source.get("size")
    if size is None:
        raise UserError(
            f"params.yaml instruct_data.{source.name}: give it a `size` so the plan can count its samples"
        )
    from llava_more.data.demo_instruct import MIX  # the demo generator's default mix

    mix = source.get("mix") or MIX
    return int(size), 1 - mix.get("text", 0.0) / sum(mix.values())


def benchmark_samples(params: Params, study: Study) -> tuple[int, list[str]]:
    """Samples one evaluation runs over every task of the study, and the tasks of unknown size."""
    total, unknown = 0, []
    for task in study.benchmarks:
        if study.benchmark_suite != "real":
            count = params.demo_benchmarks.get("size", 200)
        elif task in REAL_TASK_SAMPLES:
            count = REAL_TASK_SAMPLES[task]
        else:
            count = UNKNOWN_TASK_SAMPLES
            unknown.append(task)
        total += min(count, study.eval_samples) if study.eval_samples else count
    return total, unknown


@functools.cache
def model_size(
    llm_id: str, vision_id: str, s2_scales: tuple[int, ...] | bool | None, size: str
) -> tuple[ModelSize, dict]:
    """The cost model's view of one model, from :func:`describe_model`; also returns the record.

    ``s2_scales`` as for ``describe_model`` (True: the encoder's default scales). Cached: the
    architecture of an id never changes within a process.
    """
    from llava_more.model.describe import describe_model
    from llava_more.model.llm import get_llm
    from llava_more.model.vision import get_vision

    record = describe_model(llm_id, vision_id, s2_scales, size=size)
    text = get_llm(llm_id).config(size)
    untied_embedding = (
        0 if getattr(text, "tie_word_embeddings", False) else text.vocab_size * text.hidden_size
    )
    base = get_vision(vision_id).image_size(size)
    passes = sum(math.ceil(scale / base) ** 2 for scale in record["s2_scales"]) if record["s2"] else 1
    return (
        ModelSize(
            llm_params=record["llm_params"] - untied_embedding,
            vision_params=record["vision_params"],
            projector_params=record["projector_params"],
            image_tokens=record["image_tokens"],
            encoder_passes=passes,
        ),
        record,
    )


# --------------------------------------------------------------------------- the plan


@dataclass
class PlannedJob:
    kind: str  # stage1 | stage2 | eval | other
    rule: str
    experiment: str | None
    outputs: list[str]
    stage: int | None = None  # the training stage, or the stage of the model an evaluation scores
    samples: float | None = None  # sequences processed (training, epochs included) or benchmark samples
    tokens: float | None = None
    flops: float | None = None
    gpu_hours: float | None = None
    local: bool = False  # every output exists in the checkout
    remote: bool | None = None  # the DVC remote holds the dvc.lock version (None: not checked)


@dataclass
class Plan:
    study: str
    size: str
    assumptions: Assumptions
    jobs: list[PlannedJob]
    models: dict[str, dict] = field(default_factory=dict)  # pair id -> describe_model record
    notes: list[str] = field(default_factory=list)

    KINDS = ("stage1", "stage2", "eval", "other")

    def totals(self) -> dict[str, dict]:
        out = {}
        for kind in self.KINDS:
            jobs = [j for j in self.jobs if j.kind == kind]
            out[kind] = {
                "jobs": len(jobs),
                "gpu_hours": sum(j.gpu_hours or 0.0 for j in jobs),
                "local": sum(j.local for j in jobs),
                "remote": sum(bool(j.remote) for j in jobs),
                "gpu_hours_to_run": sum(j.gpu_hours or 0.0 for j in jobs if not j.local),
            }
        out["total"] = {k: sum(out[kind][k] for kind in self.KINDS) for k in out["stage1"]}
        return out

    def to_dict(self) -> dict:
        return {
            "study": self.study,
            "size": self.size,
            "assumptions": asdict(self.assumptions),
            "gpu": asdict(GPUS[self.assumptions.gpu]),
            "jobs": [asdict(j) for j in self.jobs],
            "totals": self.totals(),
            "models": self.models,
            "notes": self.notes,
        }


def _classify(study: Study) -> dict[str, tuple[str, int, str]]:
    """Output path -> (kind, stage, experiment id) for the jobs the cost model prices (a published
    study's bundles are imported, not trained: only its evaluations are priced)."""
    out = {}
    for exp in study.experiments:
        for stage in (1, 2):
            if not study.published:
                out[paths.stage_dir(study.name, stage, exp.id)] = (f"stage{stage}", stage, exp.id)
            out[paths.scores(study.name, stage, exp.id)] = ("eval", stage, exp.id)
    return out


def _dvc_lock_outputs(root: Path) -> dict[str, str]:
    import yaml

    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(
            f"{root / 'dvc.lock'}: not valid YAML ({err}); rerun `dvc repro` or pass --no-remote"
        ) from None
    return {
        str(Path(out["path"])): out["md5"]
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs") or []
        if out.get("md5")
    }


def _mark_remote(jobs: list[PlannedJob], root: Path, notes: list[str]) -> None:
    """Ask the DVC remote, by the hashes in dvc.lock, which job outputs it holds."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    recorded = _dvc_lock_outputs(root)
    try:
        with Repo(str(root)) as repo:
            remote = repo.cloud.get_remote_odb(command="plan")
            for job in jobs:
                hashes = [recorded.get(out) for out in job.outputs]
                job.remote = all(h is not None and remote.exists(h) for h in hashes)
    except (DvcException, OSError) as err:
        for job in jobs:
            job.remote = None
        notes.append(f"DVC remote not checked: {err}")


def plan_study(
    params: Params,
    study_name: str | None = None,
    root: Path = Path("."),
    assumptions: Assumptions = Assumptions(),
    check_remote: bool = True,
    jobs: list[Job] | None = None,
) -> Plan:
    """Every job of the study with its GPU-hour estimate and whether its outputs are already built.

    ``root`` is the checkout whose workflow is planned and whose outputs are looked for. ``jobs``
    (the study's DAG from :func:`snakemake_jobs`) skips the dry run, to price a DAG again under
    other assumptions. Priced jobs come in stage order (stage 1, stage 2, evaluations), each in
    the study's experiment order; the unpriced ones follow in the DAG's order.
    """
    assumptions = assumptions.check()
    study = params.study(study_name)
    root = Path(root)
    protocol = None if study.published else params.protocols[study.protocol]
    gpu = GPUS[assumptions.gpu]

    # The dry run is a separate process: build the models on the meta device meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        dag = pool.submit(snakemake_jobs, study.name, root) if jobs is None else None
        sizes = {
            pair: model_size(exp.llm, exp.vision, exp.s2_scales or exp.s2, study.size)
            for pair, exp in study.pairs.items()
        }
        if dag is not None:
            jobs = dag.result()

    instruct_samples, instruct_image_fraction = (
        (0, 1.0)
        if study.published
        else instruct_samples_and_image_fraction(params.instruct_data[study.instruct])
    )
    eval_samples, unknown_tasks = benchmark_samples(params, study)
    classify = _classify(study)
    planned: list[PlannedJob] = []
    for job in jobs:
        kind, stage, exp_id = classify.get(job.outputs[0] if job.outputs else "", ("other", None, None))
        item = PlannedJob(kind=kind, rule=job.rule, experiment=exp_id, outputs=list(job.outputs), stage=stage)
        item.local = bool(job.outputs) and all((root / out).exists() for out in job.outputs)
        if exp_id is not None:
            exp = study.experiment(exp_id)
            size, record = sizes[exp.pair_id]
            if kind == "eval":
                item.samples = eval_samples
                item.gpu_hours = (
                    eval_samples
                    * assumptions.eval_sample_seconds
                    * (record["llm_params"] / EVAL_ANCHOR_LLM_PARAMS)
                    * (GPUS["a100"].memory_bandwidth / gpu.memory_bandwidth)
                    / 3600
                )
            elif protocol is not None:
                hyper = protocol.stage(stage)
                if stage == 1:
                    samples, fraction = pretrain_samples(params.pretrain_data[exp.pretrain]), 1.0
                    text = assumptions.stage1_text_tokens
                else:
                    samples, fraction = instruct_samples, instruct_image_fraction
                    text = assumptions.stage2_text_tokens
                item.samples = samples * hyper.epochs
                seq_len = mean_sequence_length(size.image_tokens, text, fraction, hyper.max_length)
                item.tokens = item.samples * seq_len
                item.flops = training_flops(size, stage, item.samples, seq_len, fraction)
                item.gpu_hours = (
                    item.tokens / assumptions.throughput / 3600
                    if assumptions.throughput
                    else gpu_hours_from_flops(item.flops, gpu, assumptions.mfu)
                )
        planned.append(item)

    order = {exp.id: i for i, exp in enumerate(study.experiments)}
    kinds = {kind: i for i, kind in enumerate(Plan.KINDS)}
    planned.sort(key=lambda j: (kinds[j.kind], j.stage or 0, order.get(j.experiment, 0)))
    notes = []
    if (root / "dvc.lock").exists() and check_remote:
        _mark_remote(planned, root, notes)
    if unknown_tasks:
        notes.append(
            f"benchmark sample counts unknown for {', '.join(unknown_tasks)}: counted as {UNKNOWN_TASK_SAMPLES} each"
        )
    return Plan(
        study=study.name,
        size=study.size,
        assumptions=assumptions,
        jobs=planned,
        models={pair: dict(record) for pair, (_, record) in sizes.items()},
        notes=notes,
    )


# --------------------------------------------------------------------------- rendering


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
