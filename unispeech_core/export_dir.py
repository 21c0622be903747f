"""Which directories an export may replace: a model export's atomic swap (``checkpoint.swap_dir``) moves the old
directory aside and deletes it, so it must never take a directory that is not an export for one.

Every export this library writes carries ``EXPORT_MARKER`` from the moment its staging directory is created. An
export written before the marker existed is recognised by its contents: nothing but the files an export holds
(config.json, the weights, the processor files, the model card), at least one of them a model file. Anything
else (a project directory that happens to hold a config.json, a home directory, ``/``) is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .config import CONFIG_NAME
from .model_card import CARD_NAME
from .processor_files import PREPROCESSOR_NAME
from .tokenizer import SPECIAL_TOKENS_MAP_NAME, TOKENIZER_CONFIG_NAME, VOCAB_NAME

EXPORT_MARKER = ".unispeech-export.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
_MODEL_FILES = frozenset({CONFIG_NAME, *WEIGHT_NAMES, *(f"{n}.tmp" for n in WEIGHT_NAMES)})
_EXPORT_FILES = _MODEL_FILES | {VOCAB_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME, PREPROCESSOR_NAME,
                                CARD_NAME, EXPORT_MARKER}


class NotAnExportError(ValueError):
    """A directory an export would replace or clear is not an export: nothing was moved or removed."""


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is a real directory (not a link) holding our marker, or an export written before the
    marker existed (only export files, at least one a model file)."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    names = set(os.listdir(p))
    return EXPORT_MARKER in names or (bool(names & _MODEL_FILES) and names <= _EXPORT_FILES)


def check_replaceable(path: str | Path) -> None:
    """NotAnExportError naming ``path`` when it exists and is not an export (a missing path is fine)."""
    if os.path.lexists(path) and not is_export_dir(path):
        raise NotAnExportError(f"{path} exists and is not a model export (no {EXPORT_MARKER}, and it holds more "
                               "than an export's files): refusing to replace it; choose a new or empty directory")


def fresh_staging_dir(path: str | Path) -> Path:
    """An empty staging directory at ``path`` carrying the marker (an earlier staging directory of ours, e.g. left
    by a crash, is cleared first; anything else there is refused)."""
    p = Path(path)
    check_replaceable(p)
    if os.path.lexists(p):
        shutil.rmtree(p)
    p.mkdir(parents=True)
    (p / EXPORT_MARKER).write_text(json.dumps({"made_by": "unispeech export"}) + "\n", encoding="utf-8")
    return p
