"""Padding-free packing and the supervised-positions-only loss give the padded run's loss and gradients."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import torch

from llava_more.errors import ConfigError, TrainingInterrupted
from llava_more.model.builder import build_llava
from llava_more.model.bundle import load_bundle
from llava_more.model.varlen_attention import (
    BUCKET_RATIO,
    length_buckets,
    restore_attention,
    segment_bounds,
    use_varlen_attention,
)
from llava_more.text import IMAGE_TOKEN
from llava_more.text.encode import IGNORE_INDEX
from llava_more.train import TrainConfig
from llava_more.train.checkpoints import COMPLETE_MARKER
from llava_more.train.dataset import LlavaCollator
from llava_more.train.packing import PackedCollator, pack_rows, packed_slots, padded_slots, training_inputs
from llava_more.train.sampler import SeededGroupedSampler, TokenBudgetBatches, balanced_split
from llava_more.train.trainer import train_stage
from tests.test_train_helpers import bundle_weights, make_bundle, make_dataset, tiny_llava_for


def test_rows_hold_every_sample_once_within_the_budget():
    lengths = [50, 10, 40, 30, 70, 20, 120]
    rows = pack_rows(lengths, 100)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows if len(row) > 1)
    assert [6] in rows  # longer than the budget: a row of its own
    assert pack_rows(lengths, 100) == rows  # deterministic
    assert rows == [[6], [3, 4], [0, 1, 2], [5]]  # 120 | 70+30 | 50+40+10 | 20
    assert padded_slots(lengths) == 7 * 120 and packed_slots(lengths, 100) == 4 * 120
    assert packed_slots([10, 10, 10], 1000) == 30  # one row, no padding at all


def test_packed_batch_layout(bundle, dataset):
    features = [dataset[i] for i in (0, 6, 1, 7)]  # image, text, image, text
    batch = PackedCollator(bundle.tokenizer.pad_token_id, row_tokens=10_000)(features)
    assert set(batch) == {"input_ids", "labels", "position_ids", "pixel_values"}  # no attention mask
    assert batch["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == 4  # positions restart for every sample
    for start in starts:
        assert batch["labels"][0, start] == IGNORE_INDEX  # no sample predicts its neighbour's first token
    image_id = bundle.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((batch["input_ids"] == image_id).sum()) == 2 * bundle.meta.image_tokens
    assert batch["pixel_values"].shape[0] == 2
    # the placeholder image row joins image-less micro-batches, as with padding
    text_only = PackedCollator(bundle.tokenizer.pad_token_id, 10_000, dataset.placeholder_sample())
    assert text_only([dataset[6], dataset[7]])["pixel_values"].shape[0] == 1


def loss_and_grads(model, batch, sparse: bool):
    model.zero_grad()
    if sparse:
        inputs = training_inputs(batch)  # what LlavaTrainer.compute_loss passes
        out = model(**inputs, num_items_in_batch=inputs["labels"].numel())
    else:
        out = model(**batch, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


@pytest.mark.parametrize("llm", ["llama3.1-8b", "gemma2-2b", "phi4-mini"])
@pytest.mark.parametrize("row_tokens", [10_000, 120])
def test_packed_sparse_loss_and_gradients_equal_the_padded_ones(bundle, dataset, llm, row_tokens):
    torch.manual_seed(0)
    tok = bundle.tokenizer
    model = tiny_llava_for(bundle, llm)
    model.float().train()
    features = [dataset[i] for i in range(len(dataset))]
    padded = LlavaCollator(pad_token_id=tok.pad_token_id)(features)
    packed = PackedCollator(tok.pad_token_id, row_tokens)(features)
    if row_tokens == 120:
        assert packed["input_ids"].shape[0] > 1  # several rows, each padded to the longest
    reference, reference_grads = loss_and_grads(model, padded, sparse=False)
    base = model.config.get_text_config()._attn_implementation
    # packed rows through transformers' block-diagonal mask, then through the per-sample varlen path
    for varlen in (False, True):
        replaced = use_varlen_attention(model) if varlen else None
        assert model.config.get_text_config()._attn_implementation == (f"varlen_{base}" if varlen else base)
        batches = (
            ((packed, False), (packed, True)) if varlen else ((padded, True), (packed, False), (packed, True))
        )
        for batch, sparse in batches:
            loss, grads = loss_and_grads(model, batch, sparse)
            torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
            assert grads.keys() == reference_grads.keys()
            for name, grad in grads.items():
                torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        restore_attention(model, replaced)
    assert model.config.get_text_config()._attn_implementation == base


def test_segment_bounds_split_rows_where_positions_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert segment_bounds(positions) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 9)]]
    segments = [(0, 0, 3), (0, 3, 2), (0, 5, 4), (1, 0, 6), (1, 6, 3), (1, 9, 10)]
    buckets = length_buckets(segments)
    assert sorted(s for b in buckets for s in b) == sorted(segments)
    assert all(max(s[2] for s in b) <= BUCKET_RATIO * min(s[2] for s in b) for b in buckets)
    assert BUCKET_RATIO == 1.3 and [[s[2] for s in b] for b in buckets] == [[10], [6], [4], [3, 3], [2]]


@pytest.mark.parametrize("window", [None, 3])
def test_varlen_attention_is_block_diagonal_causal_attention(window):
    """Per-sample attention equals one SDPA call with the row's block-diagonal (sliding) causal mask."""
    from transformers import AttentionInterface

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = 1, True, False
    lengths = [5, 2, 7]
    q, k, v = (torch.randn(1, 2, sum(lengths), 8) for _ in range(3))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    sample = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    i, j = positions[0][:, None], positions[0][None, :]
    allowed = (sample[:, None] == sample[None, :]) & (j <= i)
    if window is not None:
        allowed &= i - j < window
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed[None, None])
    out, _ = AttentionInterface()["varlen_sdpa"](module, q, k, v, None, position_ids=positions,
                                                 sliding_window=window, scaling=8**-0.5)  # fmt: skip
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_varlen_attention_refuses_a_padding_mask(bundle, dataset):
    """Switched outside packed training (a padded batch), it stops instead of ignoring the padding."""
    tok = bundle.tokenizer
    model = build_llava("llama3.1-8b", "clip-l-336", size="tiny", vocab_size=len(tok),
                        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), pad_token_id=tok.pad_token_id)  # fmt: skip
    padded = LlavaCollator(pad_token_id=tok.pad_token_id)([dataset[0], dataset[6]])
    assert not padded["attention_mask"].all()
    use_varlen_attention(model)
    with pytest.raises(RuntimeError, match="packed training rows"):
        model(**padded, use_cache=False)


def test_a_packed_stage_trains_to_the_padded_weights(tmp_path):
    torch.set_num_threads(1)
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "instruct", n_images=6, n_text=2)
    cfg = TrainConfig(epochs=2, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.0, max_length=512,
                      image_aspect_ratio="pad", group_by_length=True, save_every_steps=100, seed=3)  # fmt: skip
    outs = {}
    for packing in (False, True):
        outs[packing] = tmp_path / f"out-{packing}"
        train_stage(
            2,
            init,
            data,
            data.parent,
            outs[packing],
            tmp_path / f"work-{packing}",
            cfg.replace(packing=packing),
        )
    padded, packed = bundle_weights(outs[False]), bundle_weights(outs[True])
    # trained through the varlen wrapper, exported with the model's own attention
    assert load_bundle(outs[True]).model.config.get_text_config()._attn_implementation == "sdpa"
    initial = bundle_weights(init)
    assert any(not torch.equal(initial[k], padded[k]) for k in padded)
    # Adam's update is about lr wherever a gradient is tiny, so float-level gradient differences there
    # move a weight by up to a step; a tenth of one step is far below what cross-sample attention does.
    for name in padded:
        torch.testing.assert_close(packed[name], padded[name], rtol=1e-4, atol=cfg.lr / 10, msg=name)


# ------------------------------------------------------------------ token-budget micro-batches


def test_balanced_split_evens_out_tokens_deterministically():
    tokens = [90, 10, 40, 40, 30, 70, 20, 60, 50, 80]
    parts = balanced_split(range(10), tokens, 3)
    assert sorted(i for part in parts for i in part) == list(range(10))
    loads = [sum(tokens[i] for i in part) for part in parts]
    assert max(loads) - min(loads) <= max(tokens) and max(loads) <= sum(tokens) / 3 + max(tokens)
    assert all(part == sorted(part) for part in parts)  # indices keep their order
    assert balanced_split(range(10), tokens, 3) == parts
    assert all(balanced_split(range(4), tokens, 4))  # as many parts as samples: none empty


def budget_lengths(n: int = 203, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 300) * (1 if rng.random() < 0.8 else -1) for _ in range(n)]


@pytest.mark.parametrize("world", [1, 2])
def test_token_budget_keeps_every_step_and_fills_micro_batches_to_the_budget(world):
    lengths, tokens, budget = budget_lengths(), [abs(n) for n in budget_lengths()], 1200
    ranks = [TokenBudgetBatches(lengths, seed=4, group_by_length=True, global_batch=16, micro_tokens=budget,
                                world_size=world, rank=r, epochs=2) for r in range(world)]  # fmt: skip
    k = ranks[0].grad_accum
    assert all(r.grad_accum == k for r in ranks) and 1 < k < 16 // world
    fixed = SeededGroupedSampler(lengths, seed=4, group_by_length=True, group_size=16)
    for epoch in (0, 1):
        for r in ranks:
            r.set_epoch(epoch)
        batches = [list(r) for r in ranks]
        assert all(len(b) == len(r) for b, r in zip(batches, ranks, strict=True))
        order = fixed.order(epoch)
        steps = [order[i : i + 16] for i in range(0, len(order), 16)]
        for s, step in enumerate(steps[:-1]):  # full steps: k micro-batches per rank, the same samples
            micro = [mb for b in batches for mb in b[s * k : (s + 1) * k]]
            assert sorted(i for mb in micro for i in mb) == sorted(step)
            assert all(mb and sum(tokens[i] for i in mb) <= budget for mb in micro)
        tail = [mb for b in batches for mb in b[(len(steps) - 1) * k :]]
        assert sorted(i for mb in tail for i in mb) == sorted(steps[-1])  # 203 = 12 x 16 + 11
        assert len({len(b) for b in batches}) == 1  # every rank runs as many micro-batches
    # k is the fewest that fits: one fewer micro-batch per rank overflows some step
    smaller = [s for e in (0, 1) for s in ranks[0].steps(e) if len(s) == 16]
    assert not all(ranks[0].fits(step, k - 1) for step in smaller)
    assert sum(len(mb) for mb in batches[0][:k]) > k  # several samples per micro-batch


def test_token_budget_config_is_checked():
    with pytest.raises(ConfigError, match="needs packing"):
        TrainConfig(micro_tokens=4096)
    with pytest.raises(ConfigError, match="at least max_length"):
        TrainConfig(packing=True, micro_tokens=1024, max_length=2048)


def test_a_token_budget_stage_trains_to_the_fixed_size_weights_and_resumes_exactly(tmp_path, caplog):
    caplog.set_level("INFO", logger="llava_more.train")
    torch.set_num_threads(1)
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "instruct", n_images=12, n_text=4)
    cfg = TrainConfig(epochs=2, global_batch=8, per_device_batch=2, lr=3e-3, warmup_ratio=0.0, max_length=512,
                      image_aspect_ratio="pad", group_by_length=True, save_every_steps=1, seed=3,
                      packing=True)  # fmt: skip
    budget = cfg.replace(micro_tokens=600)
    fixed_out, budget_out = tmp_path / "fixed", tmp_path / "budget"
    train_stage(2, init, data, data.parent, fixed_out, tmp_path / "work-fixed", cfg)
    train_stage(2, init, data, data.parent, budget_out, tmp_path / "work-budget", budget)
    fixed, packed = bundle_weights(fixed_out), bundle_weights(budget_out)
    # 8 samples of about 100 tokens per step: two micro-batches within 600 tokens, not four of 2
    assert (
        "global batch 8 = 2 micro-batch(es) per step x 1 device(s), each within the token budget of 600"
        in caplog.text
    )
    for name in fixed:
        torch.testing.assert_close(packed[name], fixed[name], rtol=1e-4, atol=cfg.lr / 10, msg=name)

    # SIGUSR1 once step 2 is saved: checkpoint at the next step and stop; the rerun resumes from it.
    work = tmp_path / "work-resumed"
    watcher = threading.Thread(
        target=signal_when, args=(work / "checkpoint-2" / COMPLETE_MARKER,), daemon=True
    )
    watcher.start()
    with pytest.raises(TrainingInterrupted):
        train_stage(2, init, data, data.parent, tmp_path / "resumed", work, budget)
    train_stage(2, init, data, data.parent, tmp_path / "resumed", work, budget)
    resumed = bundle_weights(tmp_path / "resumed")
    assert not [name for name in packed if not torch.equal(packed[name], resumed[name])]


def signal_when(path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGUSR1)
