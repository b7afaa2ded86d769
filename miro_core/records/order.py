"""The order in which training visits the records: seeded, shard-local, resumable, split without overlap.

Epoch ``e`` is a pure function of ``(seed, e)``: the shards are permuted, taken in blocks of
``block_shards`` consecutive shards, and the samples of each block are permuted among themselves. So a
worker touches at most one block of shards at a time (what makes streaming from remote shards and a
local shard cache work, as MosaicML's "shuffle blocks" do), and nothing the size of the dataset is
ever built: memory is one permutation of the shard list and one of a block.

Step ``s`` reads the global positions ``[(s * accum + micro) * world * batch + rank * batch, + batch)``
of the endless sequence of epochs, so

- a resumed run continues exactly where it stopped (the order is a function of the step);
- K processes with batch B take disjoint slices of what one process with batch K x B reads, and
  together see every sample of an epoch exactly once;
- resuming with another number of processes, but the same global batch, continues the same order.

When the whole dataset fits in one block (``block_shards`` >= number of shards) this is a plain
uniform shuffle of every sample, epoch after epoch.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _generator(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part) + 7919) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class ShuffledOrder:
    """Position in an epoch -> global sample index, for the block shuffle described above."""

    def __init__(self, shard_sizes: Sequence[int], seed: int, block_shards: int = 64) -> None:
        if not shard_sizes or sum(shard_sizes) == 0:
            raise ValueError("no samples to order")
        if block_shards < 1:
            raise ValueError("block_shards must be at least 1")
        self.sizes = [int(n) for n in shard_sizes]
        self.starts = [0, *itertools.accumulate(self.sizes)][:-1]
        self.total = sum(self.sizes)
        self.seed = seed
        self.block_shards = block_shards
        self._epoch: int | None = None
        self._block_ends: list[int] = []
        self._block_shards: list[list[int]] = []
        self._block: tuple[int, int] | None = None
        self._block_indices = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.total

    def _plan_epoch(self, epoch: int) -> None:
        shards = torch.randperm(len(self.sizes), generator=_generator(self.seed, epoch)).tolist()
        self._block_shards = [shards[i : i + self.block_shards] for i in range(0, len(shards), self.block_shards)]
        ends = itertools.accumulate(sum(self.sizes[s] for s in block) for block in self._block_shards)
        self._block_ends = list(ends)
        self._epoch = epoch
        self._block = None

    def _plan_block(self, epoch: int, block: int) -> None:
        members = [
            torch.arange(self.starts[s], self.starts[s] + self.sizes[s], dtype=torch.long)
            for s in self._block_shards[block]
        ]
        indices = torch.cat(members)
        permutation = torch.randperm(indices.numel(), generator=_generator(self.seed, epoch, block + 1))
        self._block_indices = indices[permutation]
        self._block = (epoch, block)

    def indices(self, epoch: int, start: int, count: int) -> list[int]:
        """Global indices of positions ``[start, start + count)`` of ``epoch`` (within one epoch)."""
        if self._epoch != epoch:
            self._plan_epoch(epoch)
        out: list[int] = []
        position = start
        end = start + count
        while position < end:
            block = bisect.bisect_right(self._block_ends, position)
            if self._block != (epoch, block):
                self._plan_block(epoch, block)
            block_start = self._block_ends[block - 1] if block else 0
            take = min(end, self._block_ends[block]) - position
            offset = position - block_start
            out += self._block_indices[offset : offset + take].tolist()
            position += take
        return out

    def at(self, position: int, count: int) -> list[int]:
        """Global indices of ``count`` consecutive positions of the endless sequence of epochs."""
        out: list[int] = []
        while count > 0:
            epoch, offset = divmod(position, self.total)
            take = min(count, self.total - offset)
            out += self.indices(epoch, offset, take)
            position += take
            count -= take
        return out


def first_position(step: int, micro: int, rank: int, world: int, accum: int, batch: int) -> int:
    """Global position of the first sample of one process's micro-batch."""
    return ((step * accum + micro) * world + rank) * batch


class StepSampler(Sampler[list[int]]):
    """Yields each micro-batch's indices for this process, from ``start_step`` on, without end.

    Used as a DataLoader ``batch_sampler``: the DataLoader hands whole micro-batches to its workers in
    turn, so workers never read the same sample, and returns them in this order.
    """

    def __init__(
        self,
        order: ShuffledOrder,
        batch: int,
        rank: int = 0,
        world: int = 1,
        accum: int = 1,
        start_step: int = 0,
        stop_step: int | None = None,
    ) -> None:
        self.order = order
        self.batch = batch
        self.rank = rank
        self.world = world
        self.accum = accum
        self.start_step = start_step
        self.stop_step = stop_step

    def __iter__(self) -> Iterator[list[int]]:
        steps = itertools.count(self.start_step) if self.stop_step is None else range(self.start_step, self.stop_step)
        for step in steps:
            for micro in range(self.accum):
                position = first_position(step, micro, self.rank, self.world, self.accum, self.batch)
                yield self.order.at(position, self.batch)

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an endless StepSampler has no length")
        return (self.stop_step - self.start_step) * self.accum
