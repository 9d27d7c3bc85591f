"""The fused LM head + cross-entropy (train/fused_loss.py) against transformers' plain head and loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llava_more.model.bundle import load_bundle
from llava_more.model.freezing import freeze_for_stage
from llava_more.model.varlen_attention import restore_attention, use_varlen_attention
from llava_more.text.encode import IGNORE_INDEX
from llava_more.train import TrainConfig
from llava_more.train.dataset import LlavaCollator
from llava_more.train.fused_loss import (
    FusedLossHead,
    linear_cross_entropy,
    restore_plain_loss,
    use_fused_loss,
)
from llava_more.train.packing import PackedCollator
from llava_more.train.trainer import fingerprint, train_stage
from tests.test_train_helpers import bundle_weights, make_bundle, make_dataset, tiny_llava_for
from tests.test_train_packing import loss_and_grads


def plain_loss(hidden, weight, bias, targets, softcap, divisor):
    logits = nn.functional.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    summed = nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return summed / divisor


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("num_items", [None, 11])
def test_chunked_loss_and_gradients_equal_the_plain_ones(softcap, with_bias, num_items):
    torch.manual_seed(0)
    hidden = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(37, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(37, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 37, (10,))
    targets[[2, 7]] = IGNORE_INDEX
    leaves = [t for t in (hidden, weight, bias) if t is not None]
    divisor = num_items if num_items is not None else 8
    expected = plain_loss(hidden, weight, bias, targets, softcap, divisor)
    expected_grads = torch.autograd.grad(expected * 1.7, leaves)
    for chunk_rows in (3, 10, 64):  # several chunks with a short last one, exactly one, one partial
        loss = linear_cross_entropy(
            hidden,
            weight,
            bias,
            targets,
            softcap=softcap,
            num_items_in_batch=num_items,
            chunk_rows=chunk_rows,
        )
        torch.testing.assert_close(loss, expected.float())
        for got, want in zip(torch.autograd.grad(loss * 1.7, leaves), expected_grads, strict=True):
            torch.testing.assert_close(got, want)


def test_a_frozen_head_gets_no_gradient_and_no_grad_mode_computes_none():
    torch.manual_seed(0)
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(9, 4)  # frozen, as the LLM's head in stage 1
    targets = torch.randint(0, 9, (5,))
    loss = linear_cross_entropy(hidden, weight, None, targets, chunk_rows=2)
    (grad,) = torch.autograd.grad(loss, [hidden])
    expected = plain_loss(hidden, weight, None, targets, None, 5)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, [hidden])[0])
    with torch.no_grad():
        value = linear_cross_entropy(hidden, weight, None, targets)
    assert not value.requires_grad
    torch.testing.assert_close(value, expected.detach())


# Gemma-2 brings soft-capping and a head tied to the embeddings, Phi-2 a head with a bias.
@pytest.mark.parametrize("llm", ["llama3.1-8b", "gemma2-2b", "phi-2"])
@pytest.mark.parametrize("stage", [1, 2])
def test_fused_training_forward_gives_the_plain_loss_and_gradients(bundle, dataset, llm, stage):
    torch.manual_seed(0)
    tok = bundle.tokenizer
    model = tiny_llava_for(bundle, llm)
    model.float().eval()  # Phi-2's residual dropout would draw different masks for each layout
    freeze_for_stage(model, stage)
    features = [dataset[i] for i in range(len(dataset))]
    padded = LlavaCollator(pad_token_id=tok.pad_token_id)(features)
    packed = PackedCollator(tok.pad_token_id, 10_000)(features)
    reference, reference_grads = loss_and_grads(model, padded, sparse=True)
    assert (stage == 2) == (model.lm_head.weight.grad is not None)  # the LLM's head trains in stage 2

    use_fused_loss(model)
    assert isinstance(model.lm_head, FusedLossHead)
    for batch in (padded, packed):  # padded rows, then packed ones through the varlen attention
        replaced = use_varlen_attention(model) if batch is packed else None
        loss, grads = loss_and_grads(model, batch, sparse=True)
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
        assert grads.keys() == reference_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        restore_attention(model, replaced)

    restore_plain_loss(model)
    assert type(model.lm_head) is nn.Linear and "forward" not in model.__dict__
    out = model(**padded, use_cache=False)
    assert out.logits.shape[-1] == model.config.text_config.vocab_size
    torch.testing.assert_close(out.loss, loss_and_grads(model, padded, sparse=False)[0])


def test_a_fused_loss_stage_trains_to_the_plain_weights_and_exports_a_plain_model(tmp_path, caplog):
    torch.set_num_threads(1)
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "instruct", n_images=6, n_text=2)
    cfg = TrainConfig(epochs=2, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.0, max_length=512,
                      image_aspect_ratio="pad", group_by_length=True, save_every_steps=100, seed=3,
                      packing=True)  # fmt: skip
    outs = {}
    for fused in (False, True):
        outs[fused] = tmp_path / f"out-{fused}"
        with caplog.at_level("INFO", logger="llava_more"):
            train_stage(
                2,
                init,
                data,
                data.parent,
                outs[fused],
                tmp_path / f"work-{fused}",
                cfg.replace(fused_loss=fused),
            )
        assert ("LM head and loss: fused, chunked" in caplog.text) == fused
        caplog.clear()
    plain, fused = bundle_weights(outs[False]), bundle_weights(outs[True])
    initial = bundle_weights(init)
    assert any(not torch.equal(initial[k], plain[k]) for k in plain)
    for name in plain:  # see test_a_packed_stage_trains_to_the_padded_weights for the tolerance
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-4, atol=cfg.lr / 10, msg=name)
    exported = load_bundle(outs[True]).model
    assert type(exported.lm_head) is nn.Linear and "forward" not in exported.__dict__


def test_switching_the_fused_loss_on_keeps_a_checkpoint_resumable(tmp_path):
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "instruct", n_images=2, n_text=1)
    cfg = TrainConfig(max_length=512)
    plain = fingerprint(2, cfg, data, init)
    assert fingerprint(2, cfg.replace(fused_loss=True), data, init) == plain
    assert fingerprint(2, cfg.replace(max_length=256), data, init) != plain
