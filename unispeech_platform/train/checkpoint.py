"""Checkpoints: DeepSpeed shards from every rank + the loop's state, reported to Ray Train; restore; export;
and where a model directory is, given a path a user wrote.

A checkpoint directory holds DeepSpeed's files under tag `ds` (model/optimizer shards of every rank), our
`train_state.json` (step, sampler epoch/position, counters, MLflow run id) and the model's `config.json`.
Ray registers it only after every rank's part is uploaded, so a checkpoint is complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unispeech_core.config import CONFIG_NAME
from unispeech_platform.runtime.layout import RunLayout, model_dir_candidates

TAG = "ds"
"""DeepSpeed's tag: the shards live in <checkpoint>/ds/."""
STATE_FILE = "train_state.json"


@dataclass
class TrainState:
    """Everything the loop needs to continue exactly where a checkpoint left off."""

    step: int = 0
    """Optimizer updates completed."""
    epoch: int = 0
    """Data epoch in progress."""
    position: int = 0
    """Micro-batches consumed in that epoch (per rank; skipped on restore)."""
    run_id: str | None = None
    """MLflow run this job logs to (reopened after a restart)."""
    nonfinite_skipped: int = 0
    """Micro-batches skipped because a rank's loss was NaN/inf."""
    best_score: float | None = None
    """Best dev score so far (finetune keeps that model)."""
    collapse_alarm: bool = False
    """Whether the codebook-collapse alarm has fired."""
    dropped_rows: dict[str, int] = field(default_factory=dict)
    """Bad rows dropped by the data pipeline, by reason (rank 0's count x world size is not assumed)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def save_and_report(engine, state: TrainState, metrics: dict[str, float], model_config) -> None:
    """Collective: every rank writes its DeepSpeed shards into a fresh local dir and reports it."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="unispeech-ckpt-") as d:
        engine.save_checkpoint(d, tag=TAG)
        if engine.global_rank == 0:
            Path(d, STATE_FILE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
            model_config.save_pretrained(d)
        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(d),
            checkpoint_dir_name=RunLayout.checkpoint_dir_name(state.step),
        )


def restore(engine) -> TrainState | None:
    """Load the latest reported checkpoint (after a worker failure or --resume), or None on a fresh start."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path, _ = engine.load_checkpoint(d, tag=TAG, load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no loadable checkpoint in {d}")
        return TrainState.from_dict(json.loads(Path(d, STATE_FILE).read_text()))


def export_model(engine, out_dir: str, tokenizer=None) -> None:
    """Consolidated transformers-format model (config.json, model.safetensors, vocab.json) written by rank 0.

    Collective under ZeRO-3 (parameters are gathered on every rank first). Written to a temporary sibling and
    renamed, so `out_dir` is complete or absent.
    """
    import deepspeed

    module = engine.module
    zero3 = engine.zero_optimization_stage() == 3
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None, enabled=zero3):
        if engine.global_rank != 0:
            return
        tmp = out_dir.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        dtype = next(module.parameters()).dtype
        if dtype != torch.float32:  # bf16 training: export fp32 weights from a copy
            import copy

            copy.deepcopy(module).float().save_pretrained(tmp)
        else:
            module.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)


def resolve_model_dir(src: str) -> str:
    """A transformers-format directory to load weights from: the path itself, or the export inside one of our
    run directories."""
    for candidate in model_dir_candidates(src, best=False):
        if os.path.isfile(os.path.join(candidate, CONFIG_NAME)):
            return candidate
    raise FileNotFoundError(f"finetune.init_from={src!r}: no {CONFIG_NAME} there or in its model/ export")
