"""Which samples every optimizer step trains on, and how a step is split over devices and micro-batches.

The order of epoch ``e`` depends only on ``(seed, e)``, never on the global RNG, so a run resumed
in the middle of any epoch replays exactly the order the uninterrupted run used.

Grouping (``SeededGroupedSampler``): samples are shuffled within their modality (image vs
text-only), cut into groups of one global batch (the samples of one optimizer step, over all
devices and accumulation steps), each group is sorted by length so that every micro-batch holds
similar lengths (less padding), and the groups are shuffled. The leftovers of both modalities form
one mixed group at the end.

Steps (``StepBatches``): every optimizer step is the next ``global_batch`` samples of that order,
and the last step of an epoch holds the ``len % global_batch`` samples left, so the steps, their
samples and hence their gradients are the same on 1 or N devices. Each rank's data loader gets its
own micro-batches of every step (a batch sampler: accelerate does not shard it again), and every
rank runs as many micro-batches per step as the others, which DDP's and ZeRO's collectives need. The
short last step is split like the others, only into fewer or smaller micro-batches; no sample is
repeated to fill it (what accelerate's ``even_batches`` and ``BatchRebalanceSampler`` do) and none is
dropped. A rank left without a sample gets an empty micro-batch, which the collator turns into its
unsupervised placeholder row: it keeps the rank in step with the others and adds nothing to the
loss. The loss of a step is its supervised tokens' summed cross-entropy divided by their number over
all ranks (the Trainer's ``num_items_in_batch`` with ``average_tokens_across_devices``), so how a step
is split never changes its gradient, only the order of the floating-point sums.

``FixedSizeBatches`` splits a step into micro-batches of ``per_device`` consecutive samples (the
split ``split_batch`` derives from the device count); ``TokenBudgetBatches`` (``micro_tokens``, packed
runs) into micro-batches of a variable number of samples, balanced by tokens and within the budget.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import BatchRebalanceSampler


class SeededGroupedSampler(Sampler[int]):
    """Yield dataset indices; ``set_epoch`` selects the epoch's order (the HF Trainer calls it)."""

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        seed: int,
        group_by_length: bool,
        group_size: int,
    ):
        # lengths: positive for samples with an image, negative for text-only (LLaVA's convention).
        self.lengths = [int(n) for n in lengths]
        self.seed = seed
        self.group_by_length = group_by_length
        self.group_size = max(1, group_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if not self.group_by_length:
            return torch.randperm(len(self.lengths), generator=generator).tolist()
        full_groups: list[list[int]] = []
        leftovers: list[int] = []
        for modality in (
            [i for i, n in enumerate(self.lengths) if n >= 0],
            [i for i, n in enumerate(self.lengths) if n < 0],
        ):
            shuffled = [modality[j] for j in torch.randperm(len(modality), generator=generator).tolist()]
            for start in range(0, len(shuffled), self.group_size):
                group = sorted(shuffled[start : start + self.group_size], key=lambda i: -abs(self.lengths[i]))
                if len(group) == self.group_size:
                    full_groups.append(group)
                else:
                    leftovers.extend(group)
        group_order = torch.randperm(len(full_groups), generator=generator).tolist()
        ordered = [i for g in group_order for i in full_groups[g]]
        return ordered + sorted(leftovers, key=lambda i: -abs(self.lengths[i]))


class StepBatches(BatchRebalanceSampler):
    """This rank's micro-batches, optimizer step by optimizer step (see the module docstring).

    A step split into ``world_size x parts`` micro-batches gives micro-batch ``slot * world_size +
    rank`` to ``rank``. ``grad_accum`` (micro-batches per rank in a full step) and ``tail_parts`` (in
    the last, short step of an epoch) are fixed for the run: the Trainer counts an epoch's
    micro-batches once. Subclasses decide the split (``split``, ``plan``).

    A ``BatchRebalanceSampler``, so the HF Trainer passes it as the data loader's batch sampler and
    accelerate does not shard it again.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        seed: int,
        group_by_length: bool,
        global_batch: int,
        world_size: int = 1,
        rank: int = 0,
        epochs: int = 1,
    ):
        self.order_source = SeededGroupedSampler(
            lengths, seed=seed, group_by_length=group_by_length, group_size=global_batch
        )
        self.tokens = [abs(int(n)) for n in lengths]
        self.global_batch = global_batch
        self.world_size = world_size
        self.full_steps, self.tail_size = divmod(len(self.tokens), global_batch)
        self._cached: tuple[int, list[list[list[int]]]] | None = None
        grad_accum, self.tail_parts = self.plan(range(max(1, epochs)))
        super().__init__(
            self.tokens,
            global_batch,
            world_size,
            grad_accum,
            shuffle=False,
            seed=seed,
            rank=rank,
            drop_last=False,
        )

    def plan(self, epochs: Iterable[int]) -> tuple[int, int]:
        """``(grad_accum, tail_parts)``: micro-batches per rank in a full step and in the short last one."""
        raise NotImplementedError

    def split(self, step: list[int], parts: int) -> list[list[int]]:
        """``step`` as ``parts x world_size`` micro-batches (some may be empty), each sample once."""
        raise NotImplementedError

    def steps(self, epoch: int) -> list[list[int]]:
        order = self.order_source.order(epoch)
        return [order[i : i + self.global_batch] for i in range(0, len(order), self.global_batch)]

    def tails(self, epochs: Iterable[int]) -> list[list[int]]:
        """The short last step of each of ``epochs`` (none when the set divides into global batches)."""
        return [self.steps(e)[-1] for e in epochs] if self.tail_size else []

    def describe(self) -> str:
        """The epoch's steps in words, for the log."""
        text = f"{self.full_steps} step(s) of {self.global_batch} samples"
        if self.tail_size:
            text += (
                f" and a last step of {self.tail_size} ({self.tail_parts} micro-batch(es) per device, "
                "no sample repeated or dropped)"
            )
        return f"each epoch: {text}"

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order_source.set_epoch(epoch)

    def step_batches(self, epoch: int) -> list[list[list[int]]]:
        """This rank's micro-batches of ``epoch``, step by step, in training order."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        out = []
        for step in self.steps(epoch):
            parts = self.grad_accum if len(step) == self.global_batch else self.tail_parts
            split = self.split(step, parts)
            out.append([split[slot * self.world_size + self.rank] for slot in range(parts)])
        self._cached = (epoch, out)
        return out

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of ``epoch``, in training order."""
        return [micro for step in self.step_batches(epoch) for micro in step]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return self.full_steps * self.grad_accum + (self.tail_parts if self.tail_size else 0)


def contiguous_split(indices: Sequence[int], parts: int) -> list[list[int]]:
    """``indices`` cut, in order, into ``parts`` runs whose sizes differ by at most one (larger first)."""
    size, larger = divmod(len(indices), parts)
    out, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < larger else 0)
        out.append(list(indices[start:end]))
        start = end
    return out


class FixedSizeBatches(StepBatches):
    """Micro-batches of ``per_device`` consecutive samples of the order (padded or packed runs).

    A full step gives each rank ``global_batch / (world_size x per_device)`` of them, in the
    order and assignment accelerate's own sharding used. The short last step takes as few
    micro-batches per rank as hold it at ``per_device`` samples each, its samples spread evenly:
    the ci study's last 8 samples are one micro-batch of 8 on one device, of 2 on each of 4.
    """

    def __init__(self, lengths: Sequence[int], *, per_device: int, **kwargs):
        self.per_device = per_device
        super().__init__(lengths, **kwargs)

    def plan(self, epochs: Iterable[int]) -> tuple[int, int]:
        per_step = self.world_size * self.per_device
        if self.global_batch % per_step:
            raise ValueError(
                f"global batch {self.global_batch} is not a multiple of {self.world_size} device(s) x "
                f"{self.per_device} samples"
            )
        return self.global_batch // per_step, max(1, math.ceil(self.tail_size / per_step))

    def split(self, step: list[int], parts: int) -> list[list[int]]:
        return contiguous_split(step, parts * self.world_size)


def balanced_split(indices: Sequence[int], tokens: Sequence[int], parts: int) -> list[list[int]]:
    """``indices`` split into ``parts`` lists of near-equal token sums (longest first into the lightest).

    Deterministic (ties go to the lower index and the lower part); with at least ``parts`` indices no
    part is empty. Each part keeps its indices in the order they had in ``indices``.
    """
    position = {index: i for i, index in enumerate(indices)}
    heap = [(0, part) for part in range(parts)]
    members: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(indices, key=lambda i: (-tokens[i], position[i])):
        load, part = heapq.heappop(heap)
        members[part].append(index)
        heapq.heappush(heap, (load + tokens[index], part))
    return [sorted(part, key=position.__getitem__) for part in members]


class TokenBudgetBatches(StepBatches):
    """Micro-batches of a variable number of samples, each within ``micro_tokens`` tokens (packed runs).

    Every optimizer step holds exactly the samples it holds with fixed-size micro-batches; only its
    split into ``world_size x grad_accum`` micro-batches changes: by tokens (``balanced_split``), so
    short samples share a micro-batch in larger numbers and every micro-batch (and every rank)
    carries about the same work. ``grad_accum`` is the fewest micro-batches per rank with which every
    step of every epoch fits the budget, and the short last step takes the fewest with which it fits
    in every epoch.
    """

    def __init__(self, lengths: Sequence[int], *, micro_tokens: int, **kwargs):
        self.micro_tokens = micro_tokens
        super().__init__(lengths, **kwargs)

    def split(self, step: list[int], parts: int) -> list[list[int]]:
        return balanced_split(step, self.tokens, parts * self.world_size)

    def fits(self, step: list[int], parts: int) -> bool:
        """Whether ``step`` split into ``parts`` micro-batches per rank keeps each within the budget."""
        return max(sum(self.tokens[i] for i in part) for part in self.split(step, parts)) <= self.micro_tokens

    def plan(self, epochs: Iterable[int]) -> tuple[int, int]:
        epochs = list(epochs)
        per_rank = self.global_batch // self.world_size
        full = [s for e in epochs for s in self.steps(e) if len(s) == self.global_batch]
        tails = self.tails(epochs)
        # No split into fewer parts can fit the heaviest step: start the search there.
        heaviest = max((sum(self.tokens[i] for i in step) for step in full + tails), default=0)
        fewest = min(per_rank, max(1, math.ceil(heaviest / (self.micro_tokens * self.world_size))))
        # per_rank parts hold one sample each, and a sample never exceeds the budget (config check)
        grad_accum = next(
            (k for k in range(fewest, per_rank) if all(self.fits(s, k) for s in full + tails)), per_rank
        )
        tail_parts = next(
            (k for k in range(1, grad_accum) if all(self.fits(s, k) for s in tails)), grad_accum
        )
        return grad_accum, tail_parts
