"""The experiment's own directory, <experiment.storage_path>/<experiment.name>: claimed with a marker file (so
--overwrite and --resume only ever touch a directory this job made), one result file per finished arm and seed
(what --resume keeps), and the clean-up of an unfinished one. Kept apart from the runner, which only calls it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.experiments.report import ArmResult
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.hardware import machine_line

MARKER = "experiment.json"
"""Written first into <storage_path>/<experiment.name>: --overwrite only ever removes a directory holding it."""


def experiment_dir(cfg: ExperimentConfig) -> tuple[Path, Path]:
    """(storage root, <storage root>/<experiment.name>), both absolute."""
    storage = Path(cfg.experiment.storage_path).resolve()
    return storage, storage / cfg.experiment.name


def check_storage(cfg: ExperimentConfig, *, overwrite: bool) -> Path:
    """The experiment's directory, if it is free or may be replaced: a previous run is kept unless --overwrite,
    and only a directory this job made (it holds MARKER) strictly inside experiment.storage_path is replaced.
    Raises JobSetupError (exit 3) before anything is started or removed."""
    from unispeech_platform.runtime.removal import check_within

    storage, root = experiment_dir(cfg)
    if not os.path.lexists(root):
        return root
    if not overwrite:
        raise JobSetupError(f"{root} holds a previous run of experiment {cfg.experiment.name!r} (kept): pass "
                            "--overwrite to replace it, or set experiment.name to start another")
    check_within(storage, root)
    if root.is_symlink() or not (root / MARKER).is_file():
        raise JobSetupError(f"{root} exists but has no {MARKER}, so this job did not make it: --overwrite only "
                            "replaces an experiment's own directory; remove it yourself or set experiment.name")
    return root


def claim_storage(cfg: ExperimentConfig, *, overwrite: bool) -> Path:
    """Remove the previous run (after check_storage, --overwrite only), then create the directory with MARKER."""
    from unispeech_platform.runtime.removal import remove_tree_within

    root = check_storage(cfg, overwrite=overwrite)
    if root.exists():
        print(f"--overwrite: removing the previous run of this experiment: {root}")
        remove_tree_within(experiment_dir(cfg)[0], root, marker=MARKER)
    root.mkdir(parents=True)
    write_marker(root, {"experiment": cfg.experiment.name, "started": time.time(), "config": resumable_params(cfg)})
    return root


def write_marker(root: Path, record: dict) -> None:
    """Never half-written: --resume and --overwrite both trust it."""
    from unispeech_platform.data.summary import atomic_write_text

    atomic_write_text(root / MARKER, json.dumps(record) + "\n")


RESUME_FREE = ("ray.", "tracking.")
"""Keys a --resume may change: where Ray runs and where MLflow is do not change what the runs compute."""


def resumable_params(cfg: ExperimentConfig) -> dict:
    """The resolved config, flat and redacted, without the RESUME_FREE keys: what a --resume must match."""
    from unispeech_platform.config import loggable_params

    return {k: v for k, v in loggable_params(cfg).items() if not k.startswith(RESUME_FREE)}


def check_resumable(cfg: ExperimentConfig) -> tuple[Path, dict]:
    """The experiment's directory and marker for --resume: it must exist, be this job's (MARKER) and have been
    started with the same config (JobSetupError, exit 3, otherwise: the message names the differing keys)."""
    root = experiment_dir(cfg)[1]
    marker = root / MARKER
    if not marker.is_file():
        raise JobSetupError(f"--resume: {root} holds no run of experiment {cfg.experiment.name!r} "
                            f"(no {MARKER}); start it without --resume")
    record = json.loads(marker.read_text(encoding="utf-8"))
    stored, now = record.get("config"), resumable_params(cfg)
    if stored is None:
        raise JobSetupError(f"--resume: {marker} was written before runs could be resumed; start again with "
                            "--overwrite")
    stored = {k: v for k, v in stored.items() if not k.startswith(RESUME_FREE)}
    differ = sorted(k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k)!r} then, {now.get(k)!r} now" for k in differ[:5])
        more = f" (+{len(differ) - 5} more)" if len(differ) > 5 else ""
        raise JobSetupError(f"--resume: the config differs from the one {root} was started with ({shown}{more}): "
                            "resume with the same config, or start another experiment.name")
    return root, record


RESULT_SUFFIX = "-result.json"
"""<root>/<label>-result.json: one finished arm and seed (scores, times, MLflow run), written when it ends."""


def save_arm_result(root: Path, result: ArmResult) -> None:
    import dataclasses

    record = {"name": result.name, "seed": result.seed, "label": result.label, "run_id": result.run_id,
              "seconds": result.seconds, "scores": [dataclasses.asdict(s) for s in result.scores],
              "machine": result.machine or machine_line(),
              "health": {stage: h.as_json() for stage, h in result.health.items()}}
    from unispeech_platform.data.summary import atomic_write_text

    atomic_write_text(root / f"{result.label}{RESULT_SUFFIX}", json.dumps(record) + "\n")


def load_arm_result(root: Path, label: str, predictions: Path,
                    speakers: dict[tuple[str, str], str] | None = None) -> ArmResult | None:
    """A finished arm and seed from its result file and its evaluation's predictions (both written by this job,
    read as JSON), or None when it did not finish."""
    from unispeech_platform.evaluate.scoring import Score
    from unispeech_platform.experiments.statistics import read_utterance_errors

    path = root / f"{label}{RESULT_SUFFIX}"
    if not path.is_file():
        return None
    r = json.loads(path.read_text(encoding="utf-8"))
    from unispeech_platform.experiments.pretrain_health import PretrainHealth

    return ArmResult(r["name"], [Score(**s) for s in r["scores"]], r["seconds"], r["run_id"], r["seed"],
                     r["label"], read_utterance_errors(predictions, speakers), r.get("machine", ""),
                     {stage: PretrainHealth.from_json(h) for stage, h in r.get("health", {}).items()})


def clear_arm(root: Path, label: str) -> None:
    """What an unfinished arm and seed left in the experiment's own directory (its stage runs and evaluation),
    removed before it starts again: only inside ``root``, which holds MARKER (check_resumable)."""
    from unispeech_platform.runtime.removal import remove_tree_within

    for stage in ("pretrain", "continued", "finetune", "eval"):
        path = root / f"{label}-{stage}"
        if os.path.lexists(path):
            print(f"--resume: removing what the unfinished {label} left: {path}")
            remove_tree_within(root, path)
