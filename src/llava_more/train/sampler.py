"""The training sampler: a seeded shuffle, optionally grouped by modality and length (LLaVA-1.5 stage 2).

The order of epoch ``e`` depends only on ``(seed, e)``, never on the global RNG, so a run resumed
in the middle of any epoch replays exactly the order the uninterrupted run used; every rank draws
the same order, and accelerate hands consecutive per-device batches of it to the ranks.

Grouping: samples are shuffled within their modality (image vs text-only), cut into groups of one
global batch (the samples of one optimizer step, over all devices and accumulation steps), each
group is sorted by length so that every per-device batch holds similar lengths (less padding), and
the groups are shuffled. The leftovers of both modalities form one mixed group at the end. Because
the group is the global batch, the order, and so every step, is the same on 1 or N devices.

Token budget (``micro_tokens``, packed runs): ``TokenBudgetBatches`` keeps those steps and splits
each into micro-batches of a variable number of samples, balanced by tokens and within the budget.
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


class TokenBudgetBatches(BatchRebalanceSampler):
    """Per-rank micro-batches of a variable number of samples, each within ``micro_tokens`` tokens.

    Every optimizer step holds exactly the samples it holds with fixed-size micro-batches: the
    ``SeededGroupedSampler`` order cut into global batches. Only the split of a step into its
    ``world_size x grad_accum`` micro-batches changes: by tokens (``balanced_split``), so short
    samples share a micro-batch in larger numbers and every micro-batch (and every rank) carries
    about the same work. ``grad_accum`` is the fewest micro-batches per rank with which every step
    of every epoch fits the budget (fixed for the run, as the trainer's accumulation must be); the
    loss of a step is normalised by its supervised tokens, so it is the fixed-size run's loss.

    A ``BatchRebalanceSampler``, so the HF Trainer passes it as the data loader's batch sampler and
    accelerate does not shard it again: it yields only this rank's micro-batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        seed: int,
        group_by_length: bool,
        global_batch: int,
        micro_tokens: int,
        world_size: int = 1,
        rank: int = 0,
        epochs: int = 1,
    ):
        self.order_source = SeededGroupedSampler(
            lengths, seed=seed, group_by_length=group_by_length, group_size=global_batch
        )
        self.tokens = [abs(int(n)) for n in lengths]
        self.global_batch = global_batch
        self.micro_tokens = micro_tokens
        self.world_size = world_size
        self._cached: tuple[int, list[list[list[int]]]] | None = None
        grad_accum = self.accumulation_for_budget(range(max(1, epochs)))
        super().__init__(
            self.tokens, global_batch, world_size, grad_accum, shuffle=False, seed=seed, rank=rank, drop_last=False
        )

    def steps(self, epoch: int) -> list[list[int]]:
        order = self.order_source.order(epoch)
        return [order[i : i + self.global_batch] for i in range(0, len(order), self.global_batch)]

    def fits(self, step: list[int], parts: int) -> bool:
        """Whether ``step`` split into ``parts`` micro-batches per rank keeps each within the budget."""
        split = balanced_split(step, self.tokens, parts * self.world_size)
        return max(sum(self.tokens[i] for i in part) for part in split) <= self.micro_tokens

    def accumulation_for_budget(self, epochs: Iterable[int]) -> int:
        """The fewest micro-batches per rank and step with which every full step fits the budget."""
        per_rank = self.global_batch // self.world_size
        full_steps = [s for e in epochs for s in self.steps(e) if len(s) == self.global_batch]
        if not full_steps:
            return 1
        # No split into fewer parts can fit the heaviest step: start the search there.
        heaviest = max(sum(self.tokens[i] for i in step) for step in full_steps)
        fewest = min(per_rank, max(1, math.ceil(heaviest / (self.micro_tokens * self.world_size))))
        for parts in range(fewest, per_rank + 1):
            if all(self.fits(step, parts) for step in full_steps):
                return parts
        return per_rank  # one sample per micro-batch; a sample never exceeds the budget (config check)

    def tail_parts(self, step: list[int]) -> int:
        """Micro-batches per rank for a partial last step: as few as fit the budget, none empty."""
        most = max(1, min(self.grad_accum, len(step) // self.world_size))
        return next((k for k in range(1, most) if self.fits(step, k)), most)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order_source.set_epoch(epoch)

    def step_batches(self, epoch: int) -> list[list[list[int]]]:
        """This rank's micro-batches of ``epoch``, step by step, in training order."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        out = []
        steps = self.steps(epoch)
        for step in steps:
            parts = self.grad_accum
            if len(step) < self.global_batch:
                if len(step) < self.world_size:  # every rank needs a sample: repeat from the start
                    step = step + steps[0][: self.world_size - len(step)]
                parts = self.tail_parts(step)
            split = balanced_split(step, self.tokens, parts * self.world_size)
            out.append([split[slot * self.world_size + self.rank] for slot in range(parts)])
        self._cached = (epoch, out)
        return out

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of ``epoch``, in training order."""
        return [micro for step in self.step_batches(epoch) for micro in step]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return len(self.batches(self.epoch))
