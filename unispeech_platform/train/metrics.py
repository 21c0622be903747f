"""Training metrics: local accumulation between logs, one all-reduce when logging."""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_finite(loss: torch.Tensor | None, device: torch.device) -> bool:
    """True on every rank iff every rank's loss is finite (a None loss, e.g. nothing masked, counts as bad)."""
    ok = loss is not None and bool(torch.isfinite(loss.detach()).all())
    if not _distributed():
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


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


class Window:
    """Sums since the last log: per micro-batch (loss terms) and per update (lr, grad norm, timings)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.micro: dict[str, float] = defaultdict(float)
        self.micro_n = 0
        self.updates: dict[str, float] = defaultdict(float)
        self.updates_n = 0
        self.seconds = self.wait_s = self.audio_s = 0.0

    def add_micro(self, loss: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        self.micro["loss"] += float(loss)
        for k, v in stats.items():
            self.micro[k] += float(v)
        self.micro_n += 1

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
        local = {f"m/{k}": v for k, v in self.micro.items()}
        local.update({"n/micro": self.micro_n, "t/audio": self.audio_s, "t/wait": self.wait_s, "t/seconds": self.seconds})
        total = all_reduce_sums(local, self.device)
        n = max(total.pop("n/micro"), 1.0)
        out = {k[2:]: v / n for k, v in total.items() if k.startswith("m/")}
        out.update({k: v / max(self.updates_n, 1) for k, v in self.updates.items()})  # identical on all ranks
        wall = total["t/seconds"] / world  # mean wall time per rank over the window
        out["audio_seconds_per_s"] = total["t/audio"] / wall if wall > 0 else 0.0
        out["data_wait_fraction"] = total["t/wait"] / total["t/seconds"] if total["t/seconds"] > 0 else 0.0
        out["seconds_per_update"] = wall / max(self.updates_n, 1)
        self.reset()
        return out
