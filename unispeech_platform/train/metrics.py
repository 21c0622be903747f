"""Training metrics: local accumulation between logs, one all-reduce when logging."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

from unispeech_platform.train.phase_clock import PhaseClock, shares

# Keys of the one all-reduce in Window.reduce: per-micro-batch sums and, per key, how many micro-batches reported
# it (a statistic measured only every N updates, e.g. grad_share/*, is a mean over those), the window's time totals.
MICRO_SUM, MICRO_COUNT = "micro_sum:", "micro_count:"
AUDIO_S, WAIT_S, WALL_S = "total:audio_s", "total:wait_s", "total:wall_s"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_finite(loss: torch.Tensor | None) -> bool:
    """This rank's loss is usable: present (a None loss, e.g. nothing masked, counts as bad) and finite."""
    return loss is not None and bool(torch.isfinite(loss.detach()).all())


def all_finite(loss: torch.Tensor | None, device: torch.device) -> bool:
    """Collective: True on every rank iff every rank's loss is finite."""
    return not any_rank([not is_finite(loss)], device)[0]


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Collective: for each flag, whether it is set on any rank (one all-reduce for all of them)."""
    if not _distributed():
        return list(flags)
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_reduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each named value over ranks. Keys are unioned first, so ranks may report different keys."""
    if not _distributed():
        return dict(values)
    keys: list[list[str]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(keys, sorted(values))
    names = sorted(set().union(*keys))
    if not names:
        return {}
    t = torch.tensor([float(values.get(k, 0.0)) for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(names, t.tolist()))


def all_gather_items(items: list[Any]) -> list[Any]:
    """Every rank's items concatenated in rank order (picklable objects, e.g. transcripts; a collective)."""
    if not _distributed():
        return list(items)
    gathered: list[list[Any]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, items)
    return [x for rank_items in gathered for x in rank_items]


class Window:
    """Sums since the last log: per micro-batch (loss terms) and per update (lr, grad norm, timings), and the
    phase clock of the interval (train/phase_clock.py)."""

    def __init__(self, device: torch.device, rank: int = 0):
        self.device, self.rank = device, rank
        self.clock = PhaseClock(device)
        self.reset()

    def reset(self) -> None:
        self.micro: dict[str, float] = defaultdict(float)
        self.micro_counts: dict[str, int] = defaultdict(int)
        self.updates: dict[str, float] = defaultdict(float)
        self.updates_n = 0
        self.seconds = self.wait_s = self.audio_s = 0.0

    @property
    def micro_n(self) -> int:
        """Micro-batches added since the last log (every one reports a loss)."""
        return self.micro_counts["loss"]

    def add_micro(self, loss: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        for k, v in {"loss": loss, **stats}.items():
            self.micro[k] += float(v)
            self.micro_counts[k] += 1

    def add_update(self, *, lr: float, grad_norm: float, seconds: float, wait_s: float, audio_s: float, **extra) -> None:
        self.updates["lr"] += lr
        self.updates["grad_norm"] += grad_norm
        for k, v in extra.items():
            self.updates[k] += v
        self.updates_n += 1
        self.seconds += seconds
        self.wait_s += wait_s
        self.audio_s += audio_s

    def reduce(self, world: int) -> dict[str, float]:
        """Means over micro-batches of all ranks; throughput summed over ranks (a CPU-GPU sync point)."""
        local = {f"{MICRO_SUM}{k}": v for k, v in self.micro.items()}
        local.update({f"{MICRO_COUNT}{k}": n for k, n in self.micro_counts.items()})
        local.update({AUDIO_S: self.audio_s, WAIT_S: self.wait_s, WALL_S: self.seconds})
        local.update(self.clock.sums(self.rank))
        total = all_reduce_sums(local, self.device)
        out = {k.removeprefix(MICRO_SUM): v / max(total[f"{MICRO_COUNT}{k.removeprefix(MICRO_SUM)}"], 1.0)
               for k, v in total.items() if k.startswith(MICRO_SUM)}
        out.update({k: v / max(self.updates_n, 1) for k, v in self.updates.items()})  # identical on all ranks
        wall = total[WALL_S] / world  # mean wall time per rank over the window
        out["audio_seconds_per_s"] = total[AUDIO_S] / wall if wall > 0 else 0.0
        out["data_wait_fraction"] = total[WAIT_S] / total[WALL_S] if total[WALL_S] > 0 else 0.0
        out["seconds_per_update"] = wall / max(self.updates_n, 1)
        out["perf/audio_seconds_per_s_per_worker"] = out["audio_seconds_per_s"] / world
        out.update(shares(total))
        self.reset()
        return out
