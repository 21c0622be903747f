"""``perf/step_efficiency`` on CPU: the job's audio-s/s per worker over what the bare model step reaches on the
same cores, batch and precision (docs/performance.md#where-a-step-goes).

MFU needs a known peak, which a CPU does not publish; the bare step is the honest ceiling there. It is timed once,
in the run itself, after the first log interval: every rank builds a plain copy of its model (no DeepSpeed, no
gradient all-reduce, no data pipeline), loads the current weights and times forward + backward + AdamW on the last
batch it trained on, all ranks at once, so the cores are shared as the job shares them. The training itself is
untouched: the copy has its own optimizer, and the random state is restored afterwards (a run with the
measurement trains bit for bit like one without it).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn

MIN_UPDATES = 50
"""Runs shorter than this skip the measurement unless train.step_efficiency_steps asks for it: its few seconds
would be a visible share of the run."""
DEFAULT_STEPS = 3
WARMUP_STEPS = 1
"""Untimed steps first: the first step allocates and warms the caches."""


def timed_steps(train, device: torch.device) -> int:
    """Bare steps to time (0 = no measurement): on CPU with full parameters on every rank (ZeRO-3 partitions
    them: no rank holds a model to copy), train.step_efficiency_steps, or by default DEFAULT_STEPS in a run of
    at least MIN_UPDATES."""
    if device.type != "cpu" or train.zero_stage >= 3:
        return 0
    if train.step_efficiency_steps is not None:
        return train.step_efficiency_steps
    return DEFAULT_STEPS if train.max_steps >= MIN_UPDATES else 0


def plain_copy(model: nn.Module) -> nn.Module:
    """A fresh instance of the model's class with its weights, frozen parameters and Gumbel temperature (and
    none of DeepSpeed's hooks, which live on the original parameters)."""
    with torch.random.fork_rng():  # building draws initial weights: the training's random state stays as it was
        copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    flags = dict(model.named_parameters())
    for name, p in copy.named_parameters():
        p.requires_grad_(flags[name].requires_grad)
    for mine, theirs in zip(copy.modules(), model.modules()):
        if hasattr(theirs, "temperature"):
            mine.temperature = theirs.temperature
    return copy.train(model.training)


def bare_audio_seconds_per_s(task, model: nn.Module, batch: dict[str, Any], device: torch.device,
                             amp: contextlib.AbstractContextManager | None, steps: int) -> float:
    """Audio-s/s of ``steps`` timed forward + backward + AdamW steps of a plain copy of ``model`` on ``batch``
    (after WARMUP_STEPS untimed), through the task's own forward, inside the run's precision."""
    copy = plain_copy(model)
    optimizer = torch.optim.AdamW([p for p in copy.parameters() if p.requires_grad], lr=1e-6)
    audio = float(batch["attention_mask"].sum()) / 16_000
    probe = getattr(task, "probe_gradients", None)
    seconds = 0.0
    with torch.random.fork_rng():  # masks, negatives and Gumbel noise of the copy's steps
        try:
            if probe is not None:
                task.probe_gradients = False  # the gradient-share probe belongs to the real update
            for i in range(WARMUP_STEPS + steps):
                started = time.perf_counter()
                with amp or contextlib.nullcontext():
                    loss, _ = task.forward(copy, batch, device)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= WARMUP_STEPS:
                    seconds += time.perf_counter() - started
        finally:
            if probe is not None:
                task.probe_gradients = probe
    return audio * steps / seconds if seconds > 0 else 0.0
