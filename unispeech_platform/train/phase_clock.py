"""Where each second of a log interval goes, on every rank (docs/performance.md#where-a-step-goes): the loop's
phases timed as they run, reduced with the interval's other metrics into ``time_share/<phase>`` (fractions of the
interval's wall time, averaged over ranks; ``time_share/other`` is the rest: collectives outside the phases,
Python between them) and ``time_share/slowest_rank`` (the rank whose forward passes took longest: the one the
others wait for; the forward pass holds no collective under ZeRO 0-2, so its time is that rank's own work).

Host phases (data wait, evaluation, checkpoint, logging) are wall-clock intervals. On a GPU the device phases
(forward, backward, optimizer) are CUDA event pairs read once per interval (one synchronisation when logging, none
per update): the host returns from a kernel launch long before the kernel ends, so wall-clock timers would put
the GPU's time wherever the next sync happens. Under DeepSpeed the gradient all-reduce (ZeRO 0-2) runs inside
``backward`` (bucketed, overlapped) and ZeRO's partitioned update and parameter gather inside ``optimizer``
(``engine.step``): they are not split further, since only DeepSpeed's ``wall_clock_breakdown`` separates them and
it synchronises the device around every phase.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from unispeech_platform.runtime.console import TIME_SHARE as SHARE

PHASES = ("data_wait", "forward", "backward", "optimizer", "evaluation", "checkpoint", "logging")
DEVICE_PHASES = frozenset({"forward", "backward", "optimizer"})
PHASE_KEY, WALL_KEY, BUSY_KEY = "phase_s:", "phase_wall_s", "rank_forward_s:"
"""Keys of the per-rank sums that travel in the interval's one all-reduce (train/metrics.py Window.reduce)."""


class PhaseClock:
    """Seconds per phase since the last ``take``, on this rank."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter):
        self.cuda = device.type == "cuda"
        self.clock = clock
        self.started = clock()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda and name in DEVICE_PHASES:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - t0

    def take(self) -> tuple[dict[str, float], float]:
        """(seconds per phase, wall seconds) since the previous take; starts the next interval."""
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self.seconds[name] += start.elapsed_time(end) / 1000.0
        now = self.clock()
        out, wall = self.seconds, now - self.started
        self.seconds, self._events, self.started = dict.fromkeys(PHASES, 0.0), [], now
        return out, wall

    def sums(self, rank: int) -> dict[str, float]:
        """This rank's interval as keys for ``all_reduce_sums`` (then read back by ``shares``)."""
        seconds, wall = self.take()
        out = {f"{PHASE_KEY}{p}": s for p, s in seconds.items()}
        out[WALL_KEY] = wall
        out[f"{BUSY_KEY}{rank}"] = seconds["forward"]
        return out


def shares(total: dict[str, float]) -> dict[str, float]:
    """``time_share/<phase>`` from the all-reduced sums: each phase's seconds over all ranks' wall seconds (the
    mean share, weighted by each rank's wall time); ``other`` makes them sum to 1 (0 where device phases
    overlap the host's, which CUDA timing can show); the slowest rank by its forward time."""
    wall = total.get(WALL_KEY, 0.0)
    if wall <= 0:
        return {}
    out = {f"{SHARE}{p}": total.get(f"{PHASE_KEY}{p}", 0.0) / wall for p in PHASES}
    out[f"{SHARE}other"] = max(0.0, 1.0 - sum(out.values()))
    busy = {int(k.removeprefix(BUSY_KEY)): v for k, v in total.items() if k.startswith(BUSY_KEY)}
    if busy:
        out[f"{SHARE}slowest_rank"] = float(max(busy, key=busy.get))
    return out
