"""The training sampler: a seeded shuffle, optionally grouped by modality and length (LLaVA-1.5 stage 2).

The order of epoch ``e`` depends only on ``(seed, e)``, never on the global RNG, so a run resumed
in the middle of any epoch replays exactly the order the uninterrupted run used; every rank draws
the same order, and accelerate hands consecutive per-device batches of it to the ranks.

Grouping: samples are shuffled within their modality (image vs text-only), cut into groups of one
global batch (the samples of one optimizer step, over all devices and accumulation steps), each
group is sorted by length so that every per-device batch holds similar lengths (less padding), and
the groups are shuffled. The leftovers of both modalities form one mixed group at the end. Because
the group is the global batch, the order, and so every step, is the same on 1 or N devices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


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
