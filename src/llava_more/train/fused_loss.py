"""The LM head and its cross-entropy in one chunked pass: a training step never holds the full logits.

The loss needs the vocabulary-wide logits of the supervised positions only long enough to take a
log-softmax, yet the standard path keeps them several times over: the head's output, its float copy,
the log-softmax saved for backward and the gradients of each (about 16 bytes per position and
vocabulary entry in bf16). With Gemma-2's 256K vocabulary and a few thousand supervised tokens per
micro-batch that is gigabytes. ``linear_cross_entropy`` walks the positions in chunks during the
forward pass and computes, per chunk, the logits, the loss and at once the gradients with respect to
the head's input and weight; only those gradients (the size of the head's input and weight) outlive
the chunk. Liger's fused linear cross-entropy works the same way in Triton; this version is plain
torch, so it runs on the CPU, under any attention and on any GPU.

``use_fused_loss(model)`` switches a LLaVA model's training forward to it (the protocol's
``fused_loss: true``); ``restore_plain_loss`` switches back before export. The head stays the same
``lm_head`` module with the same weight, called as a module, so DeepSpeed ZeRO-3 still gathers it.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast

from llava_more.text.encode import IGNORE_INDEX

# Logit elements per chunk: 2**25 float32 values are 128 MiB of working memory, whatever the vocabulary.
CHUNK_ELEMENTS = 2**25


def chunk_rows_for(vocab_size: int) -> int:
    """Positions per chunk so that one chunk's float32 logits stay near ``CHUNK_ELEMENTS``."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` (optionally soft-capped), divided by ``divisor``.

    The gradients are computed in the forward pass, chunk by chunk, and scaled in ``backward``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        softcap: float | None,
        divisor: torch.Tensor,
        chunk_rows: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # Gradients only for the inputs that take one, and none at all under torch.no_grad().
        grad_hidden = torch.empty_like(hidden) if grad_enabled and hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight) if grad_enabled and weight.requires_grad else None
        grad_bias = (
            torch.zeros_like(bias, dtype=torch.float32)
            if grad_enabled and bias is not None and bias.requires_grad
            else None
        )
        any_grads = any(g is not None for g in (grad_hidden, grad_weight, grad_bias))
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = hidden[start : start + chunk_rows]
            chunk_targets = targets[start : start + chunk_rows]
            valid = chunk_targets != IGNORE_INDEX
            picked_targets = torch.where(valid, chunk_targets, 0)[:, None]
            logits = nn.functional.linear(rows, weight, bias).float()
            capped = None
            if softcap is not None:  # in place: a chunk holds at most two vocabulary-wide buffers
                capped = logits.div_(softcap).tanh_()
                logits = capped * softcap
            log_norm = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, picked_targets)[:, 0]
            total += torch.where(valid, log_norm - picked, 0.0).sum()
            if not any_grads:
                continue
            # d loss / d logits = softmax - one_hot(target), zero on ignored positions; reuses the buffer.
            grad_logits = logits.sub_(log_norm[:, None]).exp_()
            grad_logits.scatter_add_(1, picked_targets, torch.full_like(picked[:, None], -1.0))
            grad_logits.mul_(valid[:, None])
            if capped is not None:  # d tanh = 1 - tanh^2
                grad_logits.mul_(capped.square_().neg_().add_(1))
            # The plain path casts the logits' gradient back to the head's dtype before its matmuls.
            grad_logits = grad_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_rows] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t(), rows)
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0, dtype=torch.float32)
        ctx.save_for_backward(divisor)
        ctx.grads = (grad_hidden, grad_weight, grad_bias)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total / divisor

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor):  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError(
                "fused loss: a second backward through one forward (its gradients are used up)"
            )
        (divisor,) = ctx.saved_tensors
        scale = grad_loss / divisor
        grad_hidden, grad_weight, grad_bias = ctx.grads
        ctx.grads = None  # scaled in place and handed over, so that no second copy is ever held
        if grad_hidden is not None:
            grad_hidden.mul_(scale.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight.mul_(scale.to(grad_weight.dtype))
        if grad_bias is not None:
            grad_bias = (grad_bias * scale).to(ctx.bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    softcap: float | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of the head ``hidden @ weight.T + bias`` against ``targets``, without the full logits.

    ``hidden`` is (positions, hidden); ``targets`` (positions,) may hold ``IGNORE_INDEX``. The loss
    is the sum over the targets divided by ``num_items_in_batch`` when given (as transformers'
    causal-LM loss), else their mean. ``softcap`` applies Gemma-2's ``tanh(z / cap) * cap`` first.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1).to(hidden.device)
    if num_items_in_batch is None:
        divisor = (targets != IGNORE_INDEX).sum().clamp(min=1).float()
    else:
        divisor = torch.as_tensor(num_items_in_batch, device=hidden.device).float()
    rows = chunk_rows or chunk_rows_for(weight.shape[0])
    # Inside Function.forward grad mode is always off, so whether it was on is passed in.
    return _LinearCrossEntropy.apply(
        hidden, weight, bias, targets, softcap, divisor, rows, torch.is_grad_enabled()
    )


class FusedLossHead(nn.Linear):
    """``nn.Linear`` that, given ``targets``, returns the fused cross-entropy instead of logits.

    ``use_fused_loss`` turns the model's ``lm_head`` into one by switching its class, so the module,
    its parameters (tied ones included) and every hook on it stay as they are.
    """

    softcap: float | None = None

    def forward(  # type: ignore[override]
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if targets is None:
            return super().forward(hidden)
        return linear_cross_entropy(
            hidden,
            self.weight,
            self.bias,
            targets,
            softcap=self.softcap,
            num_items_in_batch=num_items_in_batch,
        )


def _fused_loss_forward(
    self: nn.Module,
    labels: torch.Tensor,
    logits_to_keep: int | torch.Tensor = 0,
    num_items_in_batch: int | torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    **model_inputs: Any,
) -> LlavaCausalLMOutputWithPast:
    """The training forward of a LLaVA model with the fused head; ``labels`` are the targets of the
    kept positions (``train/packing.py training_inputs``). No logits are returned."""
    outputs = self.model(**model_inputs)
    hidden = slice_logits_to_keep(outputs[0], logits_to_keep)
    targets = labels if shift_labels is None else shift_labels
    loss = self.lm_head(hidden, targets=targets, num_items_in_batch=num_items_in_batch)
    return LlavaCausalLMOutputWithPast(
        loss=loss, logits=None, image_hidden_states=outputs.image_hidden_states
    )


def use_fused_loss(model: nn.Module) -> None:
    """Train ``model`` (a LLaVA ``...ForConditionalGeneration``) with the fused head and loss.

    Call before the Trainer wraps the model (DeepSpeed hooks the modules it finds then).
    """
    head = model.lm_head
    if type(head) is not nn.Linear:
        raise TypeError(f"fused loss: the LM head is a {type(head).__name__}, not a plain nn.Linear")
    head.__class__ = FusedLossHead
    head.softcap = getattr(model.config, "final_logit_softcapping", None)
    # Instance-level forward, as transformers' own Liger integration patches models.
    model.forward = types.MethodType(_fused_loss_forward, model)


def restore_plain_loss(model: nn.Module) -> None:
    """Undo ``use_fused_loss``: the class's own forward and a plain ``nn.Linear`` head (for export)."""
    if isinstance(model.lm_head, FusedLossHead):
        model.lm_head.__class__ = nn.Linear
        del model.lm_head.softcap
    model.__dict__.pop("forward", None)
