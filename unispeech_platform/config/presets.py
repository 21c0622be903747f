"""The shipped presets (the YAML files of ``configs/``) by name: ``--config tiny`` or ``--config configs/tiny.yaml``
work from a checkout and from an installed package alike, and a path to one's own file still wins.

A checkout reads ``configs/`` beside the packages; an installed wheel carries the same files under
``<prefix>/share/unispeech-platform/configs`` (``[tool.setuptools.data-files]`` in pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path

PRESET_SUFFIX = ".yaml"


def preset_dirs() -> list[Path]:
    """Where presets are looked up, in order: the checkout's ``configs/``, the installed copy."""
    return [Path(__file__).resolve().parents[2] / "configs",
            Path(sys.prefix) / "share" / "unispeech-platform" / "configs"]


def preset_names() -> list[str]:
    """Every preset name found (sorted, unique)."""
    return sorted({p.stem for d in preset_dirs() if d.is_dir() for p in d.glob(f"*{PRESET_SUFFIX}")})


def preset_name(path: str | Path) -> str | None:
    """The preset a config argument names, if it is one's form: a bare name (``tiny``) or ``configs/<name>.yaml``
    (the form docs, presets and defaults use, meant relative to the checkout)."""
    p = Path(path)
    if len(p.parts) == 1 and p.suffix == "":
        return p.name
    if len(p.parts) == 2 and p.parts[0] == "configs" and p.suffix == PRESET_SUFFIX:
        return p.stem
    return None


def resolve_config_path(path: str | Path) -> Path:
    """``path`` when it exists; else the shipped preset it names; else ``path`` unchanged (the reader then says
    it is missing)."""
    p = Path(path)
    if p.exists() or (name := preset_name(p)) is None:
        return p
    for directory in preset_dirs():
        if (candidate := directory / f"{name}{PRESET_SUFFIX}").is_file():
            return candidate
    return p
