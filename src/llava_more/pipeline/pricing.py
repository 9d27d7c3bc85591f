"""Pricing a study's jobs: how many samples each processes, and what the cost model makes of them.

Sample counts come from ``params.yaml`` (a data entry's ``size``) or the published sizes: LCS-558K
558,128; LLaVA-665K 665,298, of which 40,688 have no image. Benchmark sizes are the real suite's
evaluation splits (approximate), or the demo benchmarks' ``size``, capped by a study's
``eval_samples``. The formulas are ``pipeline/cost.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava_more.config import DataSource, Params, Protocol, Study
from llava_more.errors import UserError
from llava_more.pipeline.cost import (
    Assumptions,
    ModelSize,
    evaluation_gpu_hours,
    mean_sequence_length,
    training_flops,
    training_gpu_hours,
)

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
            count = params.demo_benchmarks["size"]
        elif task in REAL_TASK_SAMPLES:
            count = REAL_TASK_SAMPLES[task]
        else:
            count = UNKNOWN_TASK_SAMPLES
            unknown.append(task)
        total += min(count, study.eval_samples) if study.eval_samples else count
    return total, unknown


@dataclass(frozen=True)
class Price:
    """What one job processes and costs (None where it does not apply: an evaluation has no tokens)."""

    samples: float
    gpu_hours: float
    tokens: float | None = None
    flops: float | None = None


class StudyPricer:
    """Prices the training stages and evaluations of one study under ``assumptions``."""

    def __init__(self, params: Params, study: Study, assumptions: Assumptions):
        self.params, self.study, self.assumptions = params, study, assumptions
        self.protocol: Protocol | None = None if study.published else params.protocols[study.protocol]
        self.instruct = (
            (0, 1.0)
            if study.published
            else instruct_samples_and_image_fraction(params.instruct_data[study.instruct])
        )
        self.eval_samples, self.unknown_tasks = benchmark_samples(params, study)

    def evaluation(self, llm_params: float) -> Price:
        hours = evaluation_gpu_hours(self.eval_samples, llm_params, self.assumptions)
        return Price(samples=self.eval_samples, gpu_hours=hours)

    def training(self, size: ModelSize, stage: int, pretrain: str) -> Price | None:
        """A training stage of an experiment pre-trained on ``pretrain``; None in a published study."""
        if self.protocol is None:
            return None
        hyper = self.protocol.stage(stage)
        if stage == 1:
            samples, fraction = pretrain_samples(self.params.pretrain_data[pretrain]), 1.0
            text = self.assumptions.stage1_text_tokens
        else:
            samples, fraction = self.instruct
            text = self.assumptions.stage2_text_tokens
        sequences = samples * hyper.epochs
        seq_len = mean_sequence_length(size.image_tokens, text, fraction, hyper.max_length)
        tokens = sequences * seq_len
        flops = training_flops(size, stage, sequences, seq_len, fraction)
        hours = training_gpu_hours(flops, tokens, self.assumptions)
        return Price(samples=sequences, gpu_hours=hours, tokens=tokens, flops=flops)
