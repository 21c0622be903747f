"""Checkpoints: DeepSpeed shards from every rank + the loop's state, reported to Ray Train; restore; export;
and where a model directory is, given a path a user wrote.

A checkpoint directory holds DeepSpeed's files under tag `ds` (model/optimizer shards of every rank), our
`train_state.json` (step, sampler epoch/position, counters, MLflow run id), the model's `config.json` and one
manifest per rank (sha256 of the files that rank wrote, written last; see `manifest`). Ray registers it only
after every rank's part is uploaded, so a registered checkpoint is complete.

Restore trusts nothing it reads (docs/training.md#checkpoints): the newest checkpoint is verified against its
manifests and loaded with weights_only unpickling (`safe_load`); one that fails either is skipped with a warning
naming the file, and the next older one is tried. Every rank takes the same decision (the verdicts are
gathered), or ranks would continue from different steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unispeech_core.checkpoint import swap_dir
from unispeech_core.config import CONFIG_NAME
from unispeech_core.export_dir import check_replaceable, fresh_staging_dir
from unispeech_core.model_card import ModelCard, write_model_card
from unispeech_core.processor_files import save_processor_files
from unispeech_platform.runtime.errors import first_line
from unispeech_platform.runtime.layout import CHECKPOINT_PREFIX, RunLayout, model_dir_candidates
from unispeech_platform.train.manifest import verify_checkpoint, write_manifest
from unispeech_platform.train.metrics import all_gather_items
from unispeech_platform.train.safe_load import install_weights_only_loads

log = logging.getLogger("unispeech.checkpoint")
TAG = "ds"
"""DeepSpeed's tag: the shards live in <checkpoint>/ds/."""
STATE_FILE = "train_state.json"
TRAINING_RUN_FILE = "training_run.json"
"""In an export: ``{"run_id", "step"}``, the MLflow run that trained the model and the update it was exported at
(an evaluation logs its own run under that run, at that step: evaluate/tracking.py)."""


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
    oom_skipped: int = 0
    """Micro-batches skipped because a rank's forward pass ran out of memory."""
    best_score: float | None = None
    """Best dev score so far (finetune keeps that model)."""
    health_seen: list[str] = field(default_factory=list)
    """Failure states already reported (train/health.py): a restored run does not report them again."""
    dropped_rows: dict[str, int] = field(default_factory=dict)
    """Bad rows dropped by the data pipeline, by reason (rank 0's count x world size is not assumed)."""
    augmented_rows: dict[str, int] = field(default_factory=dict)
    """Rows the data pipeline augmented, by effect (docs/data.md#augmentation)."""
    lineage: int = 0
    """Bumped when a restore skipped a bad checkpoint: later checkpoints get new directory names."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class CheckpointRestoreError(RuntimeError):
    """No checkpoint of the run can be trusted and loaded; the message names each one and why."""


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def save_and_report(engine, state: TrainState, metrics: dict[str, float], model_config) -> None:
    """Collective: every rank writes its DeepSpeed shards into a fresh local dir, its manifest last, and
    reports it."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="unispeech-ckpt-") as d:
        engine.save_checkpoint(d, tag=TAG)
        if engine.global_rank == 0:
            Path(d, STATE_FILE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
            model_config.save_pretrained(d)
        write_manifest(d, engine.global_rank, _world_size(), state.step)
        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(d),
            checkpoint_dir_name=RunLayout.checkpoint_dir_name(state.step, state.lineage),
        )


def restore(engine, *, say: Callable[[str], None] | None = None) -> TrainState | None:
    """Load the newest trustworthy checkpoint (after a worker failure or --resume), or None on a fresh start.

    Candidates are Ray's latest checkpoint, then the run's older checkpoint directories, newest first. One that
    fails verification or loading is skipped with a warning (``say``: rank 0's console line); when none is left,
    CheckpointRestoreError names every one and why. Collective: all ranks load the same checkpoint."""
    import ray.train

    latest = ray.train.get_checkpoint()
    if latest is None:
        return None
    install_weights_only_loads(engine)
    rank0 = engine.global_rank == 0
    paths, next_lineage = all_gather_items([_restore_candidates(latest)])[0]  # rank 0's listing, on every rank

    def warn(line: str) -> None:
        if rank0:
            log.warning(line)
            if say is not None:
                say(f"WARNING: {line}")

    skipped: list[str] = []
    for path in paths:
        name = posixpath.basename(path)
        ckpt = latest if path == latest.path.rstrip("/") else ray.train.Checkpoint(path, filesystem=latest.filesystem)
        with contextlib.ExitStack() as stack:  # every rank reaches both collectives, whatever fails locally
            try:
                d = stack.enter_context(ckpt.as_directory())
                local = _check(d)
            except Exception as e:  # e.g. deleted meanwhile, a download that failed
                d, local = "", (f"cannot read it ({first_line(e, 300)})", None)
            problem, state = _agreed(*local)
            if problem is None:
                problem, _ = _agreed(_load(engine, d))
        if problem is None and state is not None:
            if skipped:
                state.lineage = max(state.lineage + 1, next_lineage)
                warn(f"restored from the previous checkpoint {name} (update {state.step}), {len(skipped)} newer "
                     f"one(s) skipped; next checkpoints are saved as {CHECKPOINT_PREFIX}NNNNNNNN-r{state.lineage}")
            return state
        skipped.append(f"{name}: {problem}")
        warn(f"checkpoint {name} skipped: {problem}")
    raise CheckpointRestoreError(f"no usable checkpoint in {posixpath.dirname(paths[0])}: " + "; ".join(skipped))


def resumed_epoch(run_dir: str) -> int:
    """The data epoch the run's latest checkpoint was in (0 when it has none): where a restarted worker group or
    a --resume continues, read before the workers start so the data reader can replay that epoch's order
    (data/pipeline.py ``ExactlyOnceDataConfig``). Latest = newest lineage, then highest step, as Ray reports
    them (checkpoint_dir_name). Best effort: an unreadable state means epoch 0 and a warning; the restore itself
    still verifies everything it loads."""
    from pyarrow.fs import FileSelector, FileSystem, FileType, LocalFileSystem

    fs, root = FileSystem.from_uri(run_dir) if "://" in run_dir else (LocalFileSystem(), run_dir)
    try:
        entries = fs.get_file_info(FileSelector(root, allow_not_found=True))
    except OSError as e:
        log.warning("cannot list %s (%s): the data order restarts at epoch 0", run_dir, e)
        return 0
    keys = {(k[1], k[0]): e.path for e in entries if e.type == FileType.Directory
            and (k := RunLayout.parse_checkpoint_dir_name(e.base_name)) is not None}
    if not keys:
        return 0
    path = keys[max(keys)]
    try:
        with fs.open_input_stream(posixpath.join(path, STATE_FILE)) as f:
            return int(TrainState.from_dict(json.loads(f.read())).epoch)
    except (OSError, ValueError, TypeError) as e:
        log.warning("cannot read %s of %s (%s): the data order restarts at epoch 0", STATE_FILE, path, e)
        return 0


def _restore_candidates(latest) -> tuple[list[str], int]:
    """Checkpoint paths to try, newest first: Ray's latest, then the run's other checkpoint directories of no
    later step (a later one was never registered: an interrupted upload). Also the next unused lineage."""
    from pyarrow.fs import FileSelector, FileType

    latest_path = latest.path.rstrip("/")
    parent, latest_name = posixpath.split(latest_path)
    top = RunLayout.parse_checkpoint_dir_name(latest_name)
    try:
        entries = latest.filesystem.get_file_info(FileSelector(parent))
    except OSError as e:
        log.warning("cannot list %s (%s): only the latest checkpoint is a candidate", parent, e)
        return [latest_path], (top[1] + 1 if top else 1)
    found = {e.base_name: RunLayout.parse_checkpoint_dir_name(e.base_name)
             for e in entries if e.type == FileType.Directory}
    keys = {n: k for n, k in found.items() if k is not None}
    next_lineage = max((k[1] for k in keys.values()), default=0) + 1
    older = sorted(((k, n) for n, k in keys.items() if n != latest_name and top is not None and k[0] <= top[0]),
                   reverse=True)
    return [latest_path, *(posixpath.join(parent, n) for _, n in older)], next_lineage


def _check(directory: str) -> tuple[str | None, TrainState | None]:
    """This rank's verdict on a checkpoint directory: (why not, None) or (None, its TrainState)."""
    try:
        problem = verify_checkpoint(directory)
    except OSError as e:  # unreadable file or directory: a verdict, not a crash between collectives
        return f"cannot read it ({first_line(e, 300)})", None
    if problem is not None:
        return problem, None
    try:
        return None, TrainState.from_dict(json.loads(Path(directory, STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError) as e:
        return f"{STATE_FILE} is unreadable ({e})", None


def _load(engine, directory: str) -> str | None:
    """Load the DeepSpeed state (weights_only unpickling); why it failed, or None."""
    try:
        path, _ = engine.load_checkpoint(directory, tag=TAG, load_lr_scheduler_states=False)
    except Exception as e:  # any failure makes the checkpoint unusable; the next one is tried
        return f"DeepSpeed could not load it ({first_line(e, 300)})"
    return None if path is not None else f"DeepSpeed found no loadable checkpoint under tag {TAG!r}"


def _agreed(problem: str | None, state: Any = None) -> tuple[str | None, Any]:
    """Collective: the first rank's problem (if any rank has one), so every rank decides alike."""
    problems = all_gather_items([problem])
    bad = [(r, p) for r, p in enumerate(problems) if p is not None]
    if not bad:
        return None, state
    r, p = bad[0]
    return (p if r == 0 else f"rank {r}: {p}"), None


def export_model(engine, out_dir: str, tokenizer=None, card: ModelCard | None = None, *,
                 run_id: str | None = None) -> None:
    """Consolidated transformers-format model written by rank 0: config.json, model.safetensors, the processor's
    files (preprocessor_config.json; vocab.json, tokenizer_config.json, special_tokens_map.json with a
    tokenizer) and the model card README.md, so `transformers.pipeline(...)` and `AutoProcessor` load it
    (docs/training.md#the-exported-model).

    Collective under ZeRO-3 (parameters are gathered on every rank first). Written to a temporary sibling,
    fsynced and swapped in (old aside, new in, old removed: `swap_dir`), so `out_dir` holds the old or the new
    model, never a mix.
    """
    import deepspeed

    module = engine.module
    zero3 = engine.zero_optimization_stage() == 3
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None, enabled=zero3):
        if engine.global_rank != 0:
            return
        tmp = out_dir.rstrip("/") + ".tmp"
        check_replaceable(out_dir)  # preflight checked it; the swap must not take a directory made since
        fresh_staging_dir(tmp)  # carries the export marker: swap_dir only ever replaces an export
        dtype = next(module.parameters()).dtype
        if dtype != torch.float32:  # bf16 training: export fp32 weights from a copy
            import copy

            copy.deepcopy(module).float().save_pretrained(tmp)
        else:
            module.save_pretrained(tmp)
        save_processor_files(tmp, tokenizer)
        write_model_card(tmp, card or ModelCard(name=os.path.basename(out_dir.rstrip("/")), task="unknown"))
        Path(tmp, TRAINING_RUN_FILE).write_text(json.dumps({"run_id": run_id, "step": card.step if card else None}))
        swap_dir(tmp, out_dir)


def is_training_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is one of our Ray Train checkpoints (``step_NNNNNNNN``: train_state.json + DeepSpeed's
    tag directory), not a model directory."""
    return Path(path, STATE_FILE).is_file() and Path(path, TAG).is_dir()


def resolve_model_dir(src: str) -> str:
    """A transformers-format directory to load weights from: the path itself, or the export inside one of our
    run directories."""
    for candidate in model_dir_candidates(src, best=False):
        if os.path.isfile(os.path.join(candidate, CONFIG_NAME)) and not is_training_checkpoint(candidate):
            return candidate
    raise FileNotFoundError(f"finetune.init_from={src!r}: no {CONFIG_NAME} there or in its model/ export")


@contextlib.contextmanager
def init_model_dir(src: str, key: str = "finetune.init_from") -> Iterator[str]:
    """The model directory an ``init_from`` names, for as long as the block reads it: ``resolve_model_dir``, or a
    training checkpoint (``step_NNNNNNNN``, any ZeRO stage) consolidated into a temporary directory that is
    removed afterwards (train/zero_consolidate.py: weights_only unpickling, DeepSpeed's allow-list). The driver's
    checks and every worker's from_pretrained each consolidate it again: nothing is written beside the
    checkpoint, and a worker on another node needs only the checkpoint itself. FileNotFoundError (no model
    there) and ConsolidationError (a ValueError) name ``key``."""
    from unispeech_platform.train.zero_consolidate import ConsolidationError, temporary_model_dir

    if not is_training_checkpoint(src):
        yield resolve_model_dir(src)
        return
    with contextlib.ExitStack() as stack:
        try:
            model_dir = stack.enter_context(temporary_model_dir(src, TAG))
        except ConsolidationError as e:
            raise ConsolidationError(f"{key}: {e}") from None
        yield model_dir
