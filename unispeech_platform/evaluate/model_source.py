"""Which model to evaluate, checked on the driver before any Ray work starts.

Accepted paths:

- a transformers-format directory: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``) +
  ``vocab.json`` (what our jobs export, and what transformers' ``save_pretrained`` writes);
- an MLflow URI, ``runs:/<run_id>/<path>`` or ``models:/<name>/<version>`` (``models:/<name>@<alias>``): the
  model directory inside its artifacts is downloaded into ``model/`` of the job's output (tracking/model_uri.py);
- one of our training run directories (``<storage>/<name>``, see ``runtime.layout.RunLayout``): its best export
  ``model_best`` (fine-tuning keeps the best model by dev score there) or else its export ``model/``;
- one of our Ray Train checkpoints (``<storage>/<name>/step_NNNNNNNN``): its DeepSpeed shards (any ZeRO stage, 0-3)
  are consolidated into a transformers-format directory under the evaluation's output directory
  (train/zero_consolidate.py: nothing unpickled outside the allow-list).

The MLflow run that trained the model, and the update the model is from, are read from the export's
``training_run.json`` (written with every export), else from ``train_state.json`` of the checkpoint or of the
job's newest checkpoint (an export written before training_run.json existed: its best export's update is not
known), so the evaluation's own run is nested under the training run at that update (evaluate/tracking.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unispeech_core.checkpoint import PT_WEIGHTS_NAME, WEIGHTS_NAME
from unispeech_core.config import CONFIG_NAME as CONFIG_FILE
from unispeech_core.tokenizer import VOCAB_NAME as VOCAB_FILE
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import CHECKPOINT_PREFIX, MODEL_DIR, model_dir_candidates
from unispeech_platform.runtime.output_paths import OutputDir, open_output_dir
from unispeech_platform.train.checkpoint import STATE_FILE, TAG, TRAINING_RUN_FILE

if TYPE_CHECKING:
    from unispeech_core import UniSpeechConfig

WEIGHT_FILES = (WEIGHTS_NAME, PT_WEIGHTS_NAME)
EVALUATE_JOB = "evaluate"
"""The marker's job name of an evaluation's output directory (runtime/output_paths.py)."""
WorkDir = Callable[[], OutputDir]
"""Where a training checkpoint is converted: the job's output directory, opened only when one is needed."""


class ModelLoadError(JobSetupError):
    """The model path is missing, incomplete or corrupt; the message names the offending file."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    """What the user asked for."""
    model_dir: str
    """Transformers-format directory the inference actors load (absolute)."""
    architecture: str
    """config.json's architectures[0], e.g. UniSpeechForCTC."""
    run_id: str | None
    """MLflow run of the training job that produced the model, when recorded."""
    step: int | None = None
    """The training update the model is from, when recorded."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: unreadable or not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def read_model_config(cfg_path: Path) -> UniSpeechConfig:
    """A config.json checked with the rules of the ``model:`` section (typed, ranged: config.model), so a wrongly
    typed file stops here, naming the key and the file, instead of in an inference actor after Ray started."""
    from unispeech_core import UniSpeechConfig
    from unispeech_platform.config.model import check_model_json

    raw = _read_json(cfg_path)
    try:
        check_model_json(raw)
        return UniSpeechConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{cfg_path}: not a valid UniSpeech config: {e}") from None


def _check_weights(directory: Path) -> None:
    """Header-level check (cheap for any model size): a truncated or garbage file fails here."""
    st, pt = directory / WEIGHT_FILES[0], directory / WEIGHT_FILES[1]
    if st.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(st), "pt") as f:
                if not list(f.keys()):
                    raise ModelLoadError(f"{st}: holds no tensors")
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types
            raise ModelLoadError(f"{st}: corrupt safetensors file ({e})") from None
    elif not pt.is_file():
        raise ModelLoadError(f"{directory}: no {' or '.join(WEIGHT_FILES)} (not a model directory)")


def check_model_dir(directory: Path, *, need_vocab: bool = True) -> str:
    """Validate a transformers-format directory; returns its architecture name."""
    from unispeech_core import PhoneTokenizer

    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelLoadError(f"{directory}: no {CONFIG_FILE} (not a model directory)")
    config = read_model_config(cfg_path)
    _check_weights(directory)
    if need_vocab:
        try:
            tok = PhoneTokenizer.from_file(directory / VOCAB_FILE)
        except (FileNotFoundError, ValueError) as e:  # the message names the file
            raise ModelLoadError(str(e)) from None
        if config.vocab_size is not None and len(tok) > config.vocab_size:
            raise ModelLoadError(
                f"{directory / VOCAB_FILE}: {len(tok)} tokens but the model's vocab_size is {config.vocab_size}"
            )
    arch = (config.extra.get("architectures") or [_architecture_from_weights(directory)])[0]
    _check_weight_keys(directory, arch)
    return arch


def _check_weight_keys(directory: Path, arch: str) -> None:
    """Weight names and shapes against the model config.json builds, as strictly as the inference actors load
    it (from_pretrained), without reading tensors: e.g. 2-layer weights with a 1-layer config stop here."""
    import unispeech_core

    heads = ("UniSpeechForCTC", "UniSpeechForSequenceClassification", "UniSpeechForPreTraining", "UniSpeechModel")
    if arch not in heads:
        return
    try:
        getattr(unispeech_core, arch).check_pretrained(directory)
    except (ValueError, FileNotFoundError) as e:
        raise ModelLoadError(str(e)) from None


def _architecture_from_weights(directory: Path) -> str:
    """Checkpoint configs carry no ``architectures``: tell the head from the tensor names."""
    from unispeech_core.checkpoint import load_state_dict

    keys = set(load_state_dict(directory))
    for key, arch in (("lm_head.weight", "UniSpeechForCTC"), ("classifier.weight", "UniSpeechForSequenceClassification"),
                      ("quantizer.codevectors", "UniSpeechForPreTraining")):
        if key in keys:
            return arch
    return "UniSpeechModel"


def _run_and_step(path: Path) -> tuple[str | None, int | None]:
    data = json.loads(path.read_text())
    step = data.get("step")
    return data.get("run_id"), int(step) if isinstance(step, int) else None


def recorded_training(model_dir: Path) -> tuple[str | None, int | None]:
    """(MLflow run id, training update) of the model: its export's training_run.json, else train_state.json of
    the checkpoint it is or of the newest checkpoint, searched from the model dir upwards (the update only when
    that checkpoint is the one the directory holds or the job's final export)."""
    if (model_dir / TRAINING_RUN_FILE).is_file():
        return _run_and_step(model_dir / TRAINING_RUN_FILE)
    for base in (model_dir, *list(model_dir.parents)[:2]):
        if (base / STATE_FILE).is_file():
            return _run_and_step(base / STATE_FILE)
        steps = sorted(p for p in base.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file())
        if steps:
            run_id, step = _run_and_step(steps[-1] / STATE_FILE)
            return run_id, step if model_dir.name == MODEL_DIR else None
    return None, None


def recorded_run_id(model_dir: Path) -> str | None:
    """The MLflow run id training recorded for the model (recorded_training)."""
    return recorded_training(model_dir)[0]


def _export_checkpoint(ckpt: Path, output: OutputDir, vocab: Path | None) -> Path:
    """Ray Train checkpoint (DeepSpeed shards of any ZeRO stage) -> transformers-format dir ``model/`` in the job's
    output (every file claimed there: runtime/output_paths.py). Consolidated by train/zero_consolidate.py: every
    file unpickled with weights_only=True and DeepSpeed's allow-list, a refusal is one line naming the file."""
    from unispeech_platform.train.zero_consolidate import (
        ConsolidationError,
        consolidated_state_dict,
        write_model_dir,
    )

    if not (ckpt / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{ckpt}: a training checkpoint without {CONFIG_FILE}")
    try:
        state = consolidated_state_dict(ckpt / TAG)
    except ConsolidationError as e:
        raise ModelLoadError(str(e)) from None
    out_dir = output.claim(MODEL_DIR, directory=True)
    write_model_dir(state, ckpt / CONFIG_FILE, vocab, weights_path=output.claim(MODEL_DIR, WEIGHT_FILES[0]),
                    config_path=output.claim(MODEL_DIR, CONFIG_FILE),
                    vocab_path=output.claim(MODEL_DIR, VOCAB_FILE) if vocab is not None and vocab.is_file() else None)
    return out_dir


def resolve_model(path: str, work_dir: str | Path | WorkDir, *, tracking_uri: str | None = None) -> ResolvedModel:
    """Find and validate the model behind ``path`` (raises ModelLoadError naming the path). A training checkpoint
    is converted into ``model/`` of ``work_dir`` (an evaluation output directory, or the job's own opener); a
    ``runs:/`` or ``models:/`` URI is downloaded from ``tracking_uri`` (None: $MLFLOW_TRACKING_URI) into it."""
    from unispeech_platform.tracking.model_uri import is_model_uri

    if is_model_uri(path):
        return _resolve_uri(path, work_dir, tracking_uri)
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ModelLoadError(f"model path {path!r} does not exist")
    if not p.is_dir():
        raise ModelLoadError(f"model path {path!r} is a file; expected a model directory or training checkpoint")
    if (p / STATE_FILE).is_file() and (p / TAG).is_dir():  # a Ray Train checkpoint of ours
        export = p.parent / MODEL_DIR
        vocab = export / VOCAB_FILE if (export / VOCAB_FILE).is_file() else None
        run_id, step = recorded_training(p)
        output = work_dir() if callable(work_dir) else open_output_dir(work_dir, EVALUATE_JOB, overwrite=None,
                                                                        flag="output directory")[0]
        model_dir = _export_checkpoint(p, output, vocab)
    else:
        candidates = [Path(c) for c in model_dir_candidates(str(p), best=True)]
        model_dir = next((c for c in candidates if (c / CONFIG_FILE).exists()), p)
        run_id, step = recorded_training(model_dir)
    arch = check_model_dir(model_dir)
    return ResolvedModel(path, str(model_dir), arch, run_id, step)


def _resolve_uri(uri: str, work_dir: str | Path | WorkDir, tracking_uri: str | None) -> ResolvedModel:
    """An MLflow model URI (tracking/model_uri.py), downloaded into ``model/`` of ``work_dir`` and checked as a
    model directory; the training run and update come from the model's own training_run.json."""
    from unispeech_platform.tracking.model_uri import claim_in, fetch_model

    def output() -> OutputDir:  # opened once the model is downloaded: a URI that names nothing leaves no directory
        if callable(work_dir):
            return work_dir()
        return open_output_dir(work_dir, EVALUATE_JOB, overwrite=None, flag="output directory")[0]

    model_dir = fetch_model(uri, claim_in(output, MODEL_DIR), tracking_uri)
    arch = check_model_dir(model_dir)
    run_id, step = recorded_training(model_dir)
    return ResolvedModel(uri, str(model_dir), arch, run_id, step)
