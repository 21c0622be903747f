"""Driver-side checks of a training job's inputs and outputs that need no Ray (called by driver.preflight).

Each raises a JobSetupError (exit 3) with one line naming the file or key, so a wrong model or a dangerous
export path stops the job before Ray starts, not in a worker after minutes of scheduling.
"""

from __future__ import annotations

import json
import os

from unispeech_core import UniSpeechModel
from unispeech_core.config import CONFIG_NAME
from unispeech_core.export_dir import NotAnExportError, check_replaceable
from unispeech_platform.config.model import check_model_json
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.train.checkpoint import init_model_dir, is_training_checkpoint
from unispeech_platform.train.zero_consolidate import ConsolidationError


def check_init_model(init_from: str) -> str:
    """finetune.init_from: the model directory it names (or a training checkpoint, consolidated for the check),
    whose config.json follows the ``model:`` section's rules (typed, ranged; config/model.py) and whose encoder
    weights fit that config (strict, as the workers' from_pretrained loads them). Returns the directory (the
    checkpoint for a checkpoint: the workers consolidate it again)."""
    try:
        with init_model_dir(init_from) as model_dir:
            read_model_config(model_dir, "finetune.init_from")
            try:  # the encoder's weights must fit that config (heads may differ): names and shapes, no tensor read
                UniSpeechModel.check_pretrained(model_dir, allow_new_head=True)
            except (OSError, ValueError) as e:  # WeightsMismatchError is a ValueError
                raise JobSetupError(f"finetune.init_from: {e}") from None
    except (FileNotFoundError, ConsolidationError) as e:
        raise JobSetupError(str(e)) from None
    return init_from if is_training_checkpoint(init_from) else model_dir


def read_model_config(model_dir: str, key: str) -> dict:
    """A model directory's config.json, parsed and checked by the ``model:`` section's rules (config/model.py);
    JobSetupError naming ``key`` and the file otherwise."""
    path = os.path.join(model_dir, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        check_model_json(raw)
        return raw
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise JobSetupError(f"{key}: {path}: not a valid UniSpeech config: {e}") from None


def check_export_dirs(layout: RunLayout) -> None:
    """A user-chosen checkpoint.export_dir is replaced by every export (with its _best/_ctchead siblings and
    their .tmp staging and .old swap dirs): refuse one that is not a model export (our marker, or only an
    export's files: unispeech_core/export_dir.py), so a project directory that holds a config.json, a home
    directory or ``/`` is never swapped out. The default exports live inside the run directory, ours."""
    if not layout.export_override:
        return
    for path in (layout.export_dir, layout.best_export_dir, layout.ctc_head_export_dir):
        for candidate in (path, path + ".tmp", path + ".old"):
            try:
                check_replaceable(candidate)
            except NotAnExportError as e:
                raise JobSetupError(f"checkpoint.export_dir: {e}") from None
