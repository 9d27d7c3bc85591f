"""``train_stage``: one LLaVA training stage on the HF Trainer, resumable and interruptible.

Stage 1 trains the projector (template ``plain``), stage 2 the projector and the LLM (the LLM's chat
template; optionally LoRA); the vision tower never trains. Checkpoints go to ``work_dir`` (which
outlives failed Snakemake jobs) and the run resumes from the newest complete one; the finished
model is exported once into ``work_dir``, kept there, and placed at ``out_dir`` atomically by hard
links (``checkpoints.py``), so a rerun of the same run after its output was deleted trains nothing.
Every step holds the same samples on any number of devices (``sampler.py``), and a stop request
(SIGTERM, SIGUSR1, Ctrl-C: ``signals.py``) checkpoints at the next step.

Exactness: the Trainer restores model, optimizer, scheduler and RNG states and skips the batches a
checkpoint already consumed; the sampler's order depends only on (seed, epoch). A run killed at any
point and resumed ends with the same weights, bit for bit, as an uninterrupted one (tested on CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import PreTrainedModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import logging as hf_logging

from llava_more.device import resolve_device
from llava_more.errors import ConfigError, TrainingInterrupted, UserError
from llava_more.train.checkpoints import (
    FINAL_DIR,
    INTERRUPTED_MARKER,
    checkpoint_dirs,
    choose_checkpoint,
    fingerprint,
    keep_export,
    mark_complete,
    place_export,
    reuse_finished,
    rotate,
)
from llava_more.train.config import BatchSplit, TrainConfig, split_batch
from llava_more.train.dataset import LlavaCollator, LlavaTrainDataset
from llava_more.train.deepspeed import deepspeed_config
from llava_more.train.packing import PackedCollator, training_inputs
from llava_more.train.patches import training_patches
from llava_more.train.progress import PlainLogLines, stdout_is_terminal, tensorboard_callback
from llava_more.train.sampler import FixedSizeBatches, StepBatches, TokenBudgetBatches
from llava_more.train.signals import STOP_FILE_ENV, StopRequest, stop_on_signals

logger = logging.getLogger(__name__)

STAGE1_TEMPLATE = "plain"
ONE_ROW = 1 << 40  # a packed-row budget no micro-batch reaches


class LlavaTrainer(Trainer):
    """The HF Trainer with our step batches (``train/sampler.py``) and a samples/s log."""

    def __init__(self, *args: Any, global_batch: int, batches: StepBatches, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.global_batch = global_batch
        self.batches = batches
        self._throughput_mark: tuple[float, int] | None = None

    def _get_train_sampler(self, train_dataset=None) -> StepBatches:
        # A batch sampler that already yields only this rank's micro-batches (the Trainer then keeps
        # accelerate from sharding it again, and from padding a short last step with repeats).
        return self.batches

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The LM head (a vocabulary-wide matmul, then log-softmax) runs only where a supervised token
        # follows; the loss is the same sum over those positions as the full-logits loss.
        return super().compute_loss(model, training_inputs(inputs), return_outputs, num_items_in_batch)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        # The Trainer's set_epoch does not reach the sampler through accelerate's skip + shard wrappers
        # (multi-process resume mid-epoch): the resumed epoch would replay epoch 0's order.
        self.batches.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    # transformers 5.23: save_pretrained writes LLaVA checkpoints in the original key layout
    # (vision_tower.*, language_model.model.*), but Trainer resume loads them with a plain non-strict
    # load_state_dict, which silently loads nothing. Checkpoints are written with the module names
    # instead, and a resume that does not match the model exactly is an error, not a warning.
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if state_dict is not None or not isinstance(self.model, PreTrainedModel):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            self.model.save_pretrained(output_dir, save_original_format=False)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        missing = [key for key in load_result.missing_keys if key not in tied]
        if missing or load_result.unexpected_keys:
            raise RuntimeError(
                f"checkpoint does not match the model: missing {missing[:5]}, unexpected "
                f"{load_result.unexpected_keys[:5]}"
            )
        if load_result.missing_keys:
            self.model.tie_weights()

    def train(self, *args: Any, **kwargs: Any):
        self._throughput_mark = None
        return super().train(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            now, step = time.monotonic(), self.state.global_step
            if self._throughput_mark is not None and step > self._throughput_mark[1]:
                elapsed = now - self._throughput_mark[0]
                logs["samples_per_second"] = round(
                    (step - self._throughput_mark[1]) * self.global_batch / elapsed, 3
                )
            self._throughput_mark = (now, step)
        super().log(logs, start_time)


# ---------------------------------------------------------------------------- setup


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_processes(on_gpu: bool) -> PartialState:
    """This job's processes, joined (one process group when it has several) as the Trainer's arguments
    join them, so that they can share the data scan before those arguments exist.

    Building the arguments resets accelerate's state and joins the same group again: read what is
    needed of the returned state before that.
    """
    if on_gpu:
        return PartialState(timeout=timedelta(seconds=TrainingArguments.ddp_timeout))
    return PartialState(cpu=True)


def training_arguments(
    cfg: TrainConfig, work_dir: Path, split: BatchSplit, on_gpu: bool
) -> TrainingArguments:
    """TrainingArguments for ``cfg``: mixed precision, TF32 and checkpointing only where a GPU is."""
    if not on_gpu and (cfg.precision != "fp32" or cfg.tf32 or cfg.gradient_checkpointing):
        logger.info(
            "no GPU: training in fp32 without tf32 or gradient checkpointing (protocol asks %s)",
            cfg.precision,
        )
    return TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=split.per_device,
        gradient_accumulation_steps=split.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        bf16=on_gpu and cfg.precision == "bf16",
        fp16=on_gpu and cfg.precision == "fp16",
        tf32=True if on_gpu and cfg.tf32 else None,
        activation_checkpointing=on_gpu and cfg.gradient_checkpointing,
        use_cpu=not on_gpu,
        deepspeed=deepspeed_config(cfg.deepspeed),
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=cfg.num_workers,
        save_strategy="steps",
        save_steps=cfg.save_every_steps,
        save_total_limit=None,  # rotation happens after the completion marker (checkpoints.rotate)
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to="none",  # the TensorBoard callback is added explicitly, writing into the work dir
        disable_tqdm=not stdout_is_terminal(),
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
    )


def build_model(stage: int, cfg: TrainConfig, bundle: Any) -> torch.nn.Module:
    from llava_more.model.freezing import freeze_for_stage

    counts = freeze_for_stage(bundle.model, stage)
    logger.info(
        "stage %d: %s trainable / %s frozen parameters",
        stage,
        f"{counts['trainable']:,}",
        f"{counts['frozen']:,}",
    )
    if cfg.lora_r:
        from llava_more.train.lora import add_lora

        return add_lora(bundle.model, cfg.lora_r, cfg.effective_lora_alpha, cfg.lora_dropout)
    return bundle.model


def make_collator(cfg: TrainConfig, pad_token_id: int, placeholder: dict) -> LlavaCollator | PackedCollator:
    """Padded micro-batches, or packed rows of ``pack_tokens`` tokens (default: one row per micro-batch)."""
    if cfg.packing:
        return PackedCollator(pad_token_id, cfg.pack_tokens or ONE_ROW, placeholder)
    return LlavaCollator(pad_token_id=pad_token_id, placeholder=placeholder)


def step_batches(
    cfg: TrainConfig, lengths: list[int], split: BatchSplit, world_size: int, rank: int
) -> StepBatches:
    """This rank's micro-batches of every step (token-budget or fixed-size), planned over every
    epoch the run can reach."""
    steps_per_epoch = math.ceil(len(lengths) / cfg.global_batch)
    epochs = math.ceil(cfg.epochs)
    if cfg.max_steps:
        epochs = max(epochs, math.ceil(cfg.max_steps / steps_per_epoch))
    common = dict(
        seed=cfg.seed, group_by_length=cfg.group_by_length, global_batch=cfg.global_batch,
        world_size=world_size, rank=rank, epochs=epochs,
    )  # fmt: skip
    if cfg.micro_tokens:
        return TokenBudgetBatches(lengths, micro_tokens=cfg.micro_tokens, **common)
    return FixedSizeBatches(lengths, per_device=split.per_device, **common)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ---------------------------------------------------------------------------- callbacks


class CompleteCheckpoints(TrainerCallback):
    """After the Trainer saved ``checkpoint-<step>``: wait for all ranks, mark it complete, rotate."""

    def __init__(self, work_dir: str | Path, keep: int, info: dict[str, Any]):
        self.work_dir = Path(work_dir)
        self.keep = keep
        self.info = info

    def on_save(self, args, state, control, **kwargs):
        folder = self.work_dir / f"checkpoint-{state.global_step}"
        _barrier()  # every rank has written its RNG state / DeepSpeed shard
        if state.is_world_process_zero:
            mark_complete(folder, {**self.info, "global_step": state.global_step})
            rotate(self.work_dir, self.keep)
            logger.info("checkpoint %s complete", folder)
        _barrier()  # nobody runs ahead into a folder that is being rotated
        return control


class CheckpointOnStop(TrainerCallback):
    """At each optimizer step end: if any rank was asked to stop, save and stop training."""

    def __init__(self, request: StopRequest):
        self.request = request
        self.stopped_at_step: int | None = None
        stop_file = os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(stop_file) if stop_file else None

    def _any_rank_requested(self, device: torch.device) -> bool:
        if self.stop_file is not None and self.request.signal_name is None and self.stop_file.is_file():
            self.request.set_from_file(self.stop_file)
        flag = torch.tensor([1.0 if self.request.signal_name else 0.0], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested(args.device):
            if self.request.signal_name is None:
                self.request.signal_name = "a stop signal on another rank"
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control


# ---------------------------------------------------------------------------- export


def export_bundle(trainer: Trainer, bundle: Any, out_dir: Path) -> None:
    """Write the trained model (LoRA merged, ZeRO-3 shards gathered) with the bundle's tokenizer,
    image processor and metadata, atomically, from the main process."""
    from llava_more.model.bundle import save_bundle
    from llava_more.train.lora import merge_lora

    model = trainer.model
    is_zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    if is_zero3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    else:
        gathered = contextlib.nullcontext()
    with gathered:
        if trainer.args.should_save:
            final = merge_lora(model)
            if is_zero3:
                # transformers 5.23 records every known key conversion (legacy ones included) on a model
                # loaded under ZeRO-3, and reversing them at save time mangles the names
                # (vision_tower.vision_model.*, language_model.model.model.*); use the default mapping,
                # as for a model that was built rather than loaded.
                final._weight_conversions = None
            save_bundle(out_dir, final, bundle.tokenizer, bundle.image_processor, bundle.meta)
    _barrier()


# ---------------------------------------------------------------------------- entry point


def train_stage(
    stage: int,
    init_dir: str | Path,
    data_json: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    work_dir: str | Path,
    cfg: TrainConfig,
) -> None:
    """Train one stage from the bundle ``init_dir`` and export the result to ``out_dir``.

    Resumes from the newest complete checkpoint in ``work_dir``; when ``work_dir`` keeps the finished
    model of this very run (same fingerprint), places it at ``out_dir`` without training. On SIGTERM,
    SIGUSR1 or SIGINT it saves a checkpoint at the next optimizer step and raises
    ``TrainingInterrupted`` (the CLI exits 75); a second SIGINT ends the process at once.
    """
    from llava_more.data.llava_json import LlavaJsonDataset
    from llava_more.model.bundle import Bundle, load_preprocessing, load_weights
    from llava_more.text.audit import audit_dataset

    if stage not in (1, 2):
        raise ConfigError(f"--stage must be 1 or 2, got {stage}")
    if cfg.lora_r and stage != 2:
        raise ConfigError("LoRA (lora_r > 0) is a stage-2 option; stage 1 trains only the projector")
    init_dir, data_json, work_dir, out_dir = Path(init_dir), Path(data_json), Path(work_dir), Path(out_dir)

    if not stdout_is_terminal():  # SLURM logs: no progress bars for loading and saving weights
        hf_logging.disable_progress_bar()
    with stop_on_signals() as request:
        world_size = world_size_from_env()
        expected = fingerprint(stage, cfg, data_json, init_dir)
        # A launcher has looked for the kept export before it started the workers.
        if world_size == 1 and reuse_finished(work_dir, out_dir, expected):
            return
        split = split_batch(cfg.global_batch, cfg.per_device_batch, world_size)
        on_gpu = resolve_device(log=False).startswith("cuda")
        # The Trainer's arguments take over this state when they are built, after the data scan.
        processes = join_processes(on_gpu)
        rank, is_main = processes.process_index, processes.is_main_process
        if is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / INTERRUPTED_MARKER).unlink(missing_ok=True)

        tokenizer, image_processor, meta = load_preprocessing(init_dir)
        template = STAGE1_TEMPLATE if stage == 1 else meta.template
        if tokenizer.pad_token_id is None:
            raise UserError(
                f"{init_dir}: the bundle's tokenizer has no pad token; rebuild it with apply_template()"
            )
        with processes.local_main_process_first():  # the scan is cached: the others read it
            dataset = LlavaTrainDataset(
                LlavaJsonDataset(data_json, image_root),
                tokenizer,
                image_processor,
                template_id=template,
                num_image_tokens=meta.image_tokens,
                max_length=cfg.max_length,
                image_aspect_ratio=cfg.image_aspect_ratio,
                cache_dir=work_dir,
            )
            resume = choose_checkpoint(work_dir, expected, is_main)
        # Refuses to start when a supervised span is not exactly a reply plus its end-of-turn (names the record).
        audit_dataset(dataset)
        batches = step_batches(cfg, dataset.lengths, split, world_size, rank)
        if cfg.micro_tokens:
            # Accumulation is fixed by the data, and DeepSpeed's configuration (filled from the arguments)
            # must agree with what the trainer does. The per-device batch there is nominal; the token
            # budget decides each micro-batch's samples.
            accumulation = batches.grad_accum
            split = BatchSplit(math.ceil(cfg.global_batch / (world_size * accumulation)), accumulation)
        args = training_arguments(cfg, work_dir, split, on_gpu)
        if cfg.deepspeed != "none":
            # ZeRO-3 partitions weights while the model loads (deepspeed.zero.Init, configured by the
            # arguments), which reads the world size from deepspeed.comm: without this it sees 1 on CPU
            # and rejects the batch sizes.
            import deepspeed

            deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
        bundle = Bundle(
            load_weights(init_dir, device="cpu", dtype=torch.float32), tokenizer, image_processor, meta
        )
        model = build_model(stage, cfg, bundle)
        if is_main:
            if cfg.micro_tokens:
                logger.info(
                    "stage %d: global batch %d = %d micro-batch(es) per step x %d device(s), each within "
                    "the token budget of %d (%.1f samples on average)", stage, cfg.global_batch,
                    split.grad_accum, world_size, cfg.micro_tokens,
                    cfg.global_batch / (world_size * split.grad_accum),
                )  # fmt: skip
            else:
                logger.info("stage %d: %s", stage, split.describe(cfg.global_batch, world_size))
            logger.info("stage %d: %s", stage, batches.describe())
            logger.info("%d training samples (%s, template %s)", len(dataset), data_json, template)
            logger.info("resuming from %s" if resume else "starting from %s", resume or init_dir)

        collator = make_collator(cfg, tokenizer.pad_token_id, dataset.placeholder_sample())
        with training_patches(bundle.model, packing=cfg.packing, fused_loss=cfg.fused_loss) as patched:
            for line in patched if is_main else ():
                logger.info(line)
            on_signal = CheckpointOnStop(request)
            callbacks = [
                CompleteCheckpoints(work_dir, cfg.keep_checkpoints, {"fingerprint": expected}),
                on_signal,
                tensorboard_callback(work_dir),
            ]
            trainer = LlavaTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                data_collator=collator,
                callbacks=callbacks,
                global_batch=cfg.global_batch,
                batches=batches,
            )
            if not stdout_is_terminal():
                trainer.remove_callback(PrinterCallback)
                trainer.add_callback(PlainLogLines())

            trainer.train(resume_from_checkpoint=str(resume) if resume else None)

            finished = trainer.state.global_step >= trainer.state.max_steps
            if on_signal.stopped_at_step is not None and not finished:
                if is_main:
                    (work_dir / INTERRUPTED_MARKER).write_text(
                        f"{request.signal_name} at step {trainer.state.global_step}\n"
                    )
                _barrier()
                raise TrainingInterrupted(
                    f"stopped on {request.signal_name} after step {trainer.state.global_step}/{trainer.state.max_steps}; "
                    f"checkpoint saved in {work_dir}, the next start resumes from it"
                )
        staged = work_dir / f"{FINAL_DIR}.new"
        export_bundle(trainer, bundle, staged)
        if is_main:
            place_export(keep_export(staged, work_dir, expected), out_dir)
            logger.info("the stage's model is at %s (kept in %s for a rerun)", out_dir, work_dir / FINAL_DIR)
            # The kept export serves a rerun of this run from now on; the checkpoints are done with.
            for _, folder in checkpoint_dirs(work_dir):
                shutil.rmtree(folder, ignore_errors=True)
