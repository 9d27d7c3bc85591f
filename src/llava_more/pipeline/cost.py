"""The cost model of ``llava-more plan``: model FLOPs of a training stage and GPU-hours of a job.

Everything here is an **estimate** for budgeting, not a measurement.

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
and ~6% long text-only ShareGPT conversations).

Sanity check: for LLaVA-1.5-7B (Vicuna-7B x CLIP-L/336) on A100 the defaults give ~24.5 + ~57
A100-hours against the published ~3.5 h + 10 h on 8 A100s (~28 + 80 = 108): stage 1 within 12%,
stage 2 29% low. The text lengths were left as they are: the gap looks like efficiency rather
than tokens (that run reached an MFU of ~0.31 in stage 1 and ~0.25 in stage 2, with ZeRO-3,
padding to the longest sample of a batch and recomputation). ``--mfu 0.26`` gives a conservative budget for that code path.

Evaluation: benchmark samples times ``eval_sample_seconds`` (default 0.25 A100-seconds per sample
for a 7B LLaVA at batch 1, from lmms-eval's GQA and MME timings), scaled by the LLM's size and by
memory bandwidth on other GPUs (decoding at batch 1 is bandwidth-bound). A rough constant.

Model sizes come from :func:`describe_model` (the real architecture built on the meta device).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from llava_more.errors import UserError


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_bf16_flops: float  # dense, per second
    memory_bandwidth: float  # bytes per second


GPUS = {
    "a100": Gpu("A100", 312e12, 2.039e12),
    "h100": Gpu("H100", 989e12, 3.35e12),
}

# The model the evaluation anchor was timed with (LLaVA-1.5-7B's Vicuna), and the GPU.
EVAL_ANCHOR_LLM_PARAMS = 6.74e9
EVAL_ANCHOR_GPU = "a100"


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


def training_gpu_hours(flops: float, tokens: float, assumptions: Assumptions) -> float:
    """GPU-hours of training: from a measured throughput when one is given, else from FLOPs and the MFU."""
    if assumptions.throughput:
        return tokens / assumptions.throughput / 3600
    return gpu_hours_from_flops(flops, GPUS[assumptions.gpu], assumptions.mfu)


def evaluation_gpu_hours(samples: float, llm_params: float, assumptions: Assumptions) -> float:
    """GPU-hours of evaluating ``samples`` benchmark samples with an LLM of ``llm_params`` parameters."""
    anchor = GPUS[EVAL_ANCHOR_GPU]
    return (
        samples
        * assumptions.eval_sample_seconds
        * (llm_params / EVAL_ANCHOR_LLM_PARAMS)
        * (anchor.memory_bandwidth / GPUS[assumptions.gpu].memory_bandwidth)
        / 3600
    )


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
