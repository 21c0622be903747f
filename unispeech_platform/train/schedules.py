"""Per-update schedules: learning rate (warmup + polynomial decay, tri-stage, constant).

Schedules are pure functions of the update number, so restoring `step` from a checkpoint restores them exactly;
no scheduler object needs saving. The Gumbel temperature schedule lives with the quantizer in unispeech_core.
"""

from __future__ import annotations

import math

from unispeech_platform.config.sections import OptimSection


def polynomial_lr(step: int, *, lr: float, warmup: int, total: int, power: float, end_lr: float) -> float:
    """fairseq's polynomial_decay: linear warmup to lr, then (lr - end_lr) * (1 - progress)^power + end_lr."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return end_lr
    remaining = 1.0 - (step - warmup) / max(1, total - warmup)
    return (lr - end_lr) * remaining**power + end_lr


def tri_stage_lr(
    step: int, *, lr: float, total: int, phase_ratio: tuple[float, float, float], init_scale: float, final_scale: float
) -> float:
    """fairseq's tri_stage: linear warmup from lr*init_scale, hold at lr, exponential decay to lr*final_scale."""
    warmup = int(total * phase_ratio[0])
    hold = int(total * phase_ratio[1])
    decay = max(1, total - warmup - hold)
    if step < warmup:
        return lr * (init_scale + (1 - init_scale) * step / warmup)
    if step < warmup + hold:
        return lr
    t = min(step - warmup - hold, decay)
    return lr * math.exp(math.log(final_scale) * t / decay) if final_scale > 0 else lr * (1 - t / decay)


def learning_rate(cfg: OptimSection, step: int, total: int) -> float:
    """Learning rate for update `step` (0-based) of `total`."""
    if cfg.schedule == "polynomial":
        return polynomial_lr(step, lr=cfg.lr, warmup=cfg.warmup_steps, total=total, power=cfg.power, end_lr=cfg.end_lr)
    if cfg.schedule == "tri_stage":
        return tri_stage_lr(
            step,
            lr=cfg.lr,
            total=total,
            phase_ratio=cfg.phase_ratio,
            init_scale=cfg.init_lr_scale,
            final_scale=cfg.final_lr_scale,
        )
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr
