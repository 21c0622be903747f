"""The hostile-input tests' witness that a job changed nothing outside its own output (issue 30): a digest of
every entry under a directory — path, kind, mode, size and content for regular files — taken before and after."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def tree_digest(root: str | Path, *, skip: tuple[str | Path, ...] = ()) -> dict[str, str]:
    """{relative path: fingerprint} for every entry under ``root`` (links are not followed; FIFOs and device nodes
    are fingerprinted by kind and mode, never opened). Paths in ``skip`` (the job's declared output) are left out."""
    root = Path(root)
    skipped = {Path(s).resolve() for s in skip}
    out: dict[str, str] = {}
    for base, dirs, files in os.walk(root, followlinks=False):
        here = Path(base)
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skipped]
        for name in sorted(dirs + files):
            path = here / name
            if path.resolve() in skipped:
                continue
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                out[rel] = f"file {oct(st.st_mode)} {st.st_size} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = f"link {os.readlink(path)}"
            else:
                out[rel] = f"{stat.S_IFMT(st.st_mode):o} {oct(st.st_mode)}"
    return out


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    """One readable failure listing what appeared, vanished or changed."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"outside the output: added {added}, removed {removed}, changed {changed}"
