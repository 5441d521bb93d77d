"""An epoch's training loss and task statistics, summed on the device a block of steps at a time.

On the CPU every tensor operation costs microseconds, and a small model's step only a few
milliseconds: summing each step's loss, statistics and count into device totals as it came (a
dozen small operations) was 4 % of S3's step. Here a step only keeps its detached loss and
outputs; every BLOCK_STEPS steps (sooner when the kept outputs are large, as images are) one
concatenation gives the block's statistics and one stack its losses. Nothing is read back to
the host before the progress bar redraws or the epoch ends, so no GPU step waits for it.
"""

from __future__ import annotations

from itertools import groupby

import torch

from cnnlab import distributed
from cnnlab.task import Task

BLOCK_STEPS = 16
BLOCK_VALUES = 2**22  # kept output values that close a block early (16 MB of float32)


class EpochTotals:
    def __init__(self, task: Task, device: torch.device):
        self.task = task
        self.names = ("loss", *task.stat_names)
        # loss sum (each step's mean times its size), the statistics' sums, the sample count
        self.sums = torch.zeros(len(self.names) + 1, device=device, dtype=torch.float64)
        self.losses: list[torch.Tensor] = []  # every summed block's step losses, in order
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_values = 0

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One step: its mean loss, the model's outputs and the batch's targets."""
        self._pending.append((loss.detach(), outputs.detach(), targets))
        self._pending_values += outputs.numel()
        if len(self._pending) >= BLOCK_STEPS or self._pending_values >= BLOCK_VALUES:
            self._sum_block()

    def _sum_block(self) -> None:
        if not self._pending:
            return
        losses, outputs, targets = zip(*self._pending, strict=True)
        self._pending, self._pending_values = [], 0
        stacked = torch.stack(losses).double()
        sizes = [len(t) for t in targets]
        # each step's mean loss times its size, by runs of equal sizes (a last partial batch, a
        # torchrun slice): slices and Python factors, no sizes tensor copied to the device
        loss_sum, start = stacked.new_zeros(()), 0
        for size, run in groupby(sizes):
            stop = start + len(list(run))
            loss_sum = loss_sum + stacked[start:stop].sum() * size
            start = stop
        stats = self.task.batch_stats(torch.cat(outputs), torch.cat(targets))
        self.sums += torch.cat([loss_sum[None], stats, stacked.new_full((1,), sum(sizes))])
        self.losses.append(stacked)

    def running(self) -> dict[str, float]:
        """The epoch so far, for the progress bar: one host synchronisation."""
        self._sum_block()
        *sums, seen = self.sums.tolist()
        return dict(zip(self.names, (v / seen for v in sums), strict=True)) if seen else {}

    def finish(self, sharded: bool) -> tuple[dict[str, float], int]:
        """The epoch's means and its first step (from 0) whose loss was not finite, -1 if none;
        with `sharded` (torchrun) over every process, which then all log the same epoch."""
        self._sum_block()
        losses = torch.cat(self.losses) if self.losses else self.sums.new_zeros(0)
        steps = torch.arange(len(losses), device=losses.device, dtype=torch.float64)
        candidates = torch.where(torch.isfinite(losses), torch.inf, steps)
        first_bad = torch.cat([candidates, self.sums.new_full((1,), torch.inf)]).amin()
        if sharded:  # every process's sums; the first non-finite step of any
            distributed.all_sum(self.sums)
            distributed.all_min(first_bad)
        *sums, count, bad_step = torch.cat([self.sums, first_bad[None]]).tolist()  # one sync
        first = -1 if bad_step == float("inf") else int(bad_step)
        if count == 0:
            return {name: float("nan") for name in self.names}, first
        return dict(zip(self.names, (v / count for v in sums), strict=True)), first
