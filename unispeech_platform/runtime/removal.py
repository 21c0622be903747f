"""The one way a job deletes a directory tree: only strictly inside a storage root it owns, never the root itself.

Paths come from configs (``<storage_path>/<name>``); a name is validated as one path component
(config/names.py), and this check is the second line: it resolves both paths (symlinks, ``..``) and refuses
anything that is not strictly below the root, so no value, however it got here, deletes a sibling directory,
the root or ``/``. ``marker`` additionally requires the tree to carry a file that only our job writes, so a
directory someone else made under the same root is not taken for ours.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from unispeech_platform.runtime.errors import JobSetupError


class UnsafeRemovalError(JobSetupError):
    """A delete that would reach outside its storage root, or a tree that is not ours: nothing was removed."""


def check_within(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved, if it lies strictly below ``root`` (both resolved); else UnsafeRemovalError."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target == base or base not in target.parents:
        raise UnsafeRemovalError(f"refusing to remove {path}: it resolves to {target}, which is not inside {base}")
    return target


def remove_tree_within(root: str | Path, path: str | Path, *, marker: str | None = None) -> None:
    """Delete the tree at ``path`` if it is strictly inside ``root`` (and holds ``marker`` when given); a missing
    ``path`` is fine. Raises UnsafeRemovalError otherwise, before anything is deleted."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path):  # shutil.rmtree refuses links anyway; say why in our words
        raise UnsafeRemovalError(f"refusing to remove {path}: it is a symbolic link")
    target = check_within(root, path)
    if marker is not None and not (target / marker).is_file():
        raise UnsafeRemovalError(f"refusing to remove {target}: it has no {marker}, so this job did not make it")
    shutil.rmtree(target)
