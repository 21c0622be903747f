"""A model whose outputs are NaN or inf fails the job that runs it, naming the model.

Why: NaN logits decode to nothing (argmax of NaN is index 0, the CTC blank), so a model with NaN weights (a
diverged run exported anyway, a corrupted file that still parses) transcribed every file to ``""`` and scored a
PER of 100% with exit 0 and no warning. One ``isfinite`` reduction per batch (over the frames that are not
padding) is negligible next to the forward pass. Inside Ray Data actors the error cannot cross back as itself,
so an actor marks the batch's rows with ``NON_FINITE_OUTPUT`` and the driver raises (``raise_if_marked``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from unispeech_platform.runtime.errors import JobSetupError

NON_FINITE_OUTPUT = "non_finite_output"
"""The error/reason of rows whose batch produced NaN/inf outputs (never scored, never written)."""


class NonFiniteOutputError(JobSetupError):
    """The model produced NaN or inf outputs: its weights or config are broken (exit 3 in a job)."""


def describe(model_dir: str, where: str) -> str:
    """The one line of the error: the model, the first input it failed on, what to do."""
    return (f"{model_dir}: the model outputs NaN or inf (first on {where}): its weights or config.json are broken "
            f"(e.g. exported from a diverged run); nothing was written")


def check_finite(logits: Any, lengths: Any, model_dir: str, where: str) -> None:
    """NonFiniteOutputError unless ``logits`` ([batch, frames, classes], or [batch, classes] when ``lengths`` is
    None) are finite on every frame within ``lengths`` (padding frames are not the model's output)."""
    import torch

    if lengths is not None and logits.dim() == 3:
        frames = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths.to(logits.device)[:, None]
        logits = logits[frames]
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteOutputError(describe(model_dir, where))


def raise_if_marked(errors: Iterable[Any], names: Iterable[Any], model_dir: str) -> None:
    """On the driver: NonFiniteOutputError naming the first row an actor marked ``NON_FINITE_OUTPUT``."""
    for error, name in zip(errors, names):
        if isinstance(error, str) and error == NON_FINITE_OUTPUT:  # a good row's error is None or pandas' NA
            raise NonFiniteOutputError(describe(model_dir, f"utterance {name}"))
