"""``llava-more plan``: a study's jobs, what each costs in GPU-hours, and what is already built.

The job list is the Snakemake DAG itself (the forced dry run of :func:`snakemake_jobs`, the same one
``dvc.yaml`` is generated from), so the plan can never list jobs the pipeline would not run. The plan
is put together here from its parts: what each job is and whether it is built (``jobs.py``), how
many samples it processes and its price (``pricing.py``, with the cost model of ``cost.py``: every
figure is an estimate for budgeting, not a measurement), and the table printed (``plan_table.py``).

A published study (``kind: published``) trains nothing: its jobs are imports of released checkpoints
(unpriced, like data jobs) and evaluations, so its plan is evaluation GPU-hours only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llava_more.config import Params
from llava_more.pipeline.cost import GPUS, Assumptions, model_size
from llava_more.pipeline.dvc import Job, snakemake_jobs
from llava_more.pipeline.jobs import OTHER, built_locally, job_kinds, on_remote
from llava_more.pipeline.pricing import UNKNOWN_TASK_SAMPLES, StudyPricer


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


def plan_study(
    params: Params,
    study_name: str | None = None,
    root: Path = Path("."),
    assumptions: Assumptions | None = None,
    check_remote: bool = True,
    jobs: list[Job] | None = None,
) -> Plan:
    """Every job of the study with its GPU-hour estimate and whether its outputs are already built.

    ``root`` is the checkout whose workflow is planned and whose outputs are looked for;
    ``assumptions`` are the estimate's knobs (default: ``Assumptions()``). ``jobs``
    (the study's DAG from :func:`snakemake_jobs`) skips the dry run, to price a DAG again under
    other assumptions. Priced jobs come in stage order (stage 1, stage 2, evaluations), each in
    the study's experiment order; the unpriced ones follow in the DAG's order.
    """
    assumptions = (assumptions or Assumptions()).check()
    study = params.study(study_name)
    root = Path(root)

    # The dry run is a separate process: build the models on the meta device meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        dag = pool.submit(snakemake_jobs, study.name, root) if jobs is None else None
        sizes = {
            pair: model_size(exp.llm, exp.vision, exp.s2_scales or exp.s2, study.size)
            for pair, exp in study.pairs.items()
        }
        if dag is not None:
            jobs = dag.result()

    pricer = StudyPricer(params, study, assumptions)
    kinds = job_kinds(study)
    planned: list[PlannedJob] = []
    for job in jobs:
        kind, stage, exp_id = kinds.get(job.outputs[0] if job.outputs else "", OTHER)
        item = PlannedJob(kind=kind, rule=job.rule, experiment=exp_id, outputs=list(job.outputs), stage=stage)
        item.local = built_locally(job.outputs, root)
        if exp_id is not None:
            exp = study.experiment(exp_id)
            size, record = sizes[exp.pair_id]
            price = (
                pricer.evaluation(record["llm_params"])
                if kind == "eval"
                else pricer.training(size, stage, exp.pretrain)
            )
            if price is not None:
                item.samples, item.gpu_hours = price.samples, price.gpu_hours
                item.tokens, item.flops = price.tokens, price.flops
        planned.append(item)

    order = {exp.id: i for i, exp in enumerate(study.experiments)}
    kind_order = {kind: i for i, kind in enumerate(Plan.KINDS)}
    planned.sort(key=lambda j: (kind_order[j.kind], j.stage or 0, order.get(j.experiment, 0)))
    notes = []
    if (root / "dvc.lock").exists() and check_remote:
        for item, held in zip(planned, on_remote([j.outputs for j in planned], root, notes), strict=True):
            item.remote = held
    if pricer.unknown_tasks:
        notes.append(
            f"benchmark sample counts unknown for {', '.join(pricer.unknown_tasks)}: counted as {UNKNOWN_TASK_SAMPLES} each"
        )
    return Plan(
        study=study.name,
        size=study.size,
        assumptions=assumptions,
        jobs=planned,
        models={pair: dict(record) for pair, (_, record) in sizes.items()},
        notes=notes,
    )
