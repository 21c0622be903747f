"""The one rule for every path a job writes or removes (docs/data.md#where-a-job-writes, issue 30).

A path a job writes or removes:

- lies inside the job's declared output (``--out``, ``output_dir``), each part below it one safe path component
  (config/names.py's rule), so no value from data (a language, a split) ever names a path outside it;
- is created by the job, or was recorded as made by the job in its marker (``.unispeech-output.json`` at the
  output's root, written *before* the entry is created, so a crash still leaves it listed);
- is never an input of the same job (same file, or inside an input directory);
- is a regular file or directory: a FIFO, device node or symbolic link is never opened, replaced or followed.

An existing non-empty output directory the job did not mark is refused (exit 3) unless the job was given
``--overwrite``; even then the job only ever removes what its marker lists, and a name it needs that is taken by
an entry it did not make is refused. Outputs of earlier versions of our jobs (which wrote no marker) are
recognised by a job-specific ``legacy`` rule (a corpus' summary.json, a report's per.json) and adopted.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from unispeech_platform.config.names import RULE, check_name
from unispeech_platform.runtime.errors import JobSetupError

MARKER = ".unispeech-output.json"
"""At an output directory's root: which job made it and every entry it made (relative paths)."""
MARKER_FORMAT = 1

Legacy = Callable[[Path], "set[str] | None"]
"""An earlier version's output recognised by its own files: the entries it made, or None when it is not one."""


class OutputPathError(JobSetupError):
    """A path a job would write or remove breaks the rule: nothing was written or removed there (exit 3)."""


def component_problem(value: object) -> str | None:
    """Why ``value`` cannot be one path component below an output (None: it can). The names rule, and no ``=``:
    a partition directory is ``key=value``, and a second ``=`` would make its value ambiguous."""
    try:
        check_name(value)  # type: ignore[arg-type]  # check_name refuses a non-string
    except ValueError:
        return f"{value!r} cannot name a directory: it must be {RULE}"
    return f"{value!r} cannot name a directory: it must not contain '='" if "=" in str(value) else None


def _structural_problem(part: str) -> str | None:
    """Why ``part`` (a name the job itself chose, e.g. ``lang=es`` or a hidden temp name) is not one component."""
    bad = not part or part in (".", "..") or "/" in part or "\0" in part or (os.altsep and os.altsep in part)
    return f"{part!r} is not a single path component" if bad else None


def kind_of(mode: int) -> str:
    """A file type in words, for the refusals."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"))
    return next((name for test, name in kinds if test(mode)), "a regular file")


def check_kind(path: Path, what: str, *, allowed: tuple[str, ...]) -> os.stat_result | None:
    """``path``'s lstat if it is one of ``allowed`` ("a regular file", "a directory"), None if it does not exist;
    OutputPathError naming ``what`` and the kind otherwise (links are not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = kind_of(st.st_mode)
    if kind not in allowed:
        raise OutputPathError(f"{what} {path} is {kind}: refusing to write or replace it")
    return st


def check_not_input(out: Path, inputs: Iterable[str | Path], what: str) -> None:
    """OutputPathError when ``out`` is one of ``inputs`` (same file) or lies inside an input directory: a job
    never writes over what it reads."""
    target = Path(os.path.realpath(out))
    for item in inputs:
        source = Path(os.path.realpath(item))
        if not os.path.exists(source):
            continue
        same = os.path.exists(target) and os.path.samefile(target, source)
        if same or (source.is_dir() and source in target.parents):
            how = "is" if same else "lies inside"
            raise OutputPathError(f"{what} {out} {how} the input {item}: choose an output outside the inputs")


def _read_marker(root: Path) -> dict | None:
    path = root / MARKER
    if check_kind(path, "marker", allowed=("a regular file",)) is None:
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    ok = isinstance(doc, dict) and isinstance(doc.get("job"), str) and isinstance(doc.get("made"), list)
    return doc if ok else None


@dataclass
class OutputDir:
    """A job's output directory and the entries the job made there (its marker). Every write below it goes
    through :meth:`claim`; :meth:`remove_made` is the only way the job deletes anything there."""

    root: Path
    job: str
    made: set[str] = field(default_factory=set)

    def _save(self) -> None:
        doc = {"format": MARKER_FORMAT, "job": self.job, "made": sorted(self.made)}
        tmp = self.root / f"{MARKER}.tmp"
        tmp.unlink(missing_ok=True)  # our own temp name (a link there is removed, never followed)
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / MARKER)

    def claim(self, *parts: str, directory: bool = False) -> Path:
        """``root/parts...`` once it is safe to create (``directory``: as a directory, made here): every part is
        one component, every existing entry on the way is a directory (or, last, a file) the job made, and the
        entry is recorded in the marker before it exists. OutputPathError naming the path otherwise."""
        path, rel = self.root, ""
        for i, part in enumerate(parts):
            problem = _structural_problem(part)
            if problem:
                raise OutputPathError(f"{self.root}: {problem}")
            path, rel = path / part, f"{rel}/{part}" if rel else part
            last = i == len(parts) - 1
            want = "a regular file" if last and not directory else "a directory"
            exists = check_kind(path, "output entry", allowed=(want,)) is not None
            if exists and rel not in self.made:
                raise OutputPathError(f"{path} exists and was not made by {self.job}: refusing to replace it "
                                      "(move it away or choose another output)")
            if not exists:
                self.made.add(rel)
                self._save()
                if not last or directory:
                    path.mkdir()
        return path

    def check_free(self, *names: str) -> None:
        """OutputPathError naming the first of ``names`` (entries at the root) taken by something the job did not
        make: called before the first claim, so a refusal leaves the directory exactly as it was."""
        for name in names:
            if os.path.lexists(self.root / name) and name not in self.made:
                raise OutputPathError(f"{self.root / name} exists and was not made by {self.job}: refusing to "
                                      "replace it (move it away or choose another output)")

    def _entry(self, rel: str) -> os.stat_result | None:
        """lstat of ``root/rel`` with every directory on the way checked: None when missing, OutputPathError
        when a link (or anything but a directory) stands on the way, so a removal never follows one out."""
        path, st = self.root, None
        parts = rel.split("/")
        for i, part in enumerate(parts):
            if _structural_problem(part):
                raise OutputPathError(f"{self.root / MARKER}: lists {rel!r}, which is not a path below the output")
            path = path / part
            kinds = ("a regular file", "a directory") if i == len(parts) - 1 else ("a directory",)
            st = check_kind(path, "output entry", allowed=kinds)
            if st is None:
                return None
        return st

    def remove_made(self, only: Iterable[str] | None = None) -> None:
        """Delete every file the marker lists, then every listed directory left empty; never a link's target,
        never an entry the job did not make (a user's file inside one of our directories stays, and keeps it).
        ``only``: just these entries and what the marker lists below them."""
        roots = None if only is None else set(only)
        chosen = [rel for rel in self.made
                  if roots is None or rel in roots or any(rel.startswith(r + "/") for r in roots)]
        for rel in sorted(chosen, key=lambda r: r.count("/"), reverse=True):
            st = self._entry(rel)
            path = self.root / rel
            if st is not None and stat.S_ISDIR(st.st_mode):
                if not any(path.iterdir()):
                    path.rmdir()
            elif st is not None:
                path.unlink()
        if chosen:
            self.made = {rel for rel in self.made if os.path.lexists(self.root / rel)}
            self._save()


def open_output_dir(out: str | Path, job: str, *, overwrite: bool | None, legacy: Legacy | None = None,
                    inputs: Iterable[str | Path] = (), flag: str = "--out") -> tuple[OutputDir, bool]:
    """``out`` as this job's output directory (created if missing) and whether it already was ours (our marker,
    or an earlier version's output that ``legacy`` recognises). A non-empty directory that is not ours is
    refused unless ``overwrite``; then the job writes beside its contents and removes none of them (``None``: the
    job has no ``--overwrite``, such a directory is always refused)."""
    root = Path(os.path.realpath(out))  # the declared output itself may be the user's link; nothing below it
    check_not_input(root, inputs, flag)
    if check_kind(root, flag, allowed=("a directory",)) is None:
        root.mkdir(parents=True)
    marker = _read_marker(root)
    if marker is not None and marker["job"] != job:
        raise OutputPathError(f"{flag} {root} holds the output of {marker['job']}, not of {job}: "
                              "choose another path")
    made = set(map(str, marker["made"])) if marker is not None else (legacy(root) if legacy else None)
    ours = made is not None
    foreign = sorted(p.name for p in root.iterdir() if p.name != MARKER)
    if not ours and foreign and not overwrite:
        hint = "choose another path" if overwrite is None else \
            "pass --overwrite to write beside its contents, or choose another path"
        raise OutputPathError(f"{flag} {root} is not empty and was not made by {job} (it holds {foreign[0]!r}): "
                              f"{hint}")
    return OutputDir(root, job, made or set()), ours


class GuardedWriter:
    """A text file whose failing writes (disk full, file too large) raise OutputPathError naming the output,
    instead of an OSError a job could mistake for a broken input."""

    def __init__(self, f: IO[str], path: Path, what: str):
        self._f, self._path, self._what = f, path, what

    def write(self, text: str) -> int:
        try:
            return self._f.write(text)
        except OSError as e:
            raise write_error(self._path, self._what, e) from None


def write_error(path: Path, what: str, error: OSError, *, after: str = "nothing was written") -> OutputPathError:
    """A write that failed (disk full, file too large, read-only), as one line naming the output."""
    return OutputPathError(f"{what} {path}: cannot write it ({error.strerror or error}); {after}")


@contextmanager
def atomic_output_file(path: str | Path, what: str = "--out") -> Iterator[GuardedWriter]:
    """A text file written under a unique hidden temp name beside ``path`` (created with O_EXCL: never an
    existing entry) and renamed onto it when the block ends without an error; on any error the temp file is
    removed, so ``path`` holds the old or the complete new content, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    f = os.fdopen(fd, "w", encoding="utf-8")
    try:
        yield GuardedWriter(f, path, what)
        try:
            f.close()  # flushes: the last buffered lines may be the ones that do not fit
        except OSError as e:
            raise write_error(path, what, e) from None
        check_kind(path, what, allowed=("a regular file",))  # still what the job checked before it started
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
