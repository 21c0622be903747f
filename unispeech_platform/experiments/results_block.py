"""The experiment's generated results live in a hand-edited Markdown file (docs/results.md) between two markers
named after the experiment; a run replaces its own block and leaves every other byte alone, so the analysis
written around it survives re-runs and several experiments (presets) can share one file.

    <!-- BEGIN GENERATED: crosslingual-cpu -->
    ... written by python -m jobs.crosslingual ...
    <!-- END GENERATED: crosslingual-cpu -->

A file without the block gets it appended; a missing file is created. A file whose markers are broken (one
without the other, twice, or END before BEGIN) is refused: guessing would delete someone's text.
"""

from __future__ import annotations

from pathlib import Path

from unispeech_platform.runtime.errors import JobSetupError


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN GENERATED: {name} -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED: {name} -->"


class ResultsFileError(JobSetupError):
    """The results file's markers for this experiment are broken (exit 3, the file and the fix named)."""


def _span(text: str, name: str, where: str) -> tuple[int, int] | None:
    """(start of BEGIN, end of END) of the experiment's block, None when neither marker is there."""
    begin, end = begin_marker(name), end_marker(name)
    nb, ne = text.count(begin), text.count(end)
    if nb == ne == 0:
        return None
    if nb != 1 or ne != 1 or text.index(end) < text.index(begin):
        raise ResultsFileError(f"{where}: expected one '{begin}' followed by one '{end}', found {nb} and {ne}"
                               f"{' in the wrong order' if nb == ne == 1 else ''}; fix the markers by hand "
                               "(the job only replaces what lies between them)")
    return text.index(begin), text.index(end) + len(end)


def replace_block(text: str, name: str, body: str, where: str = "results file") -> str:
    """``text`` with the experiment's block (markers included) holding ``body``; appended after a blank line
    when the file has no block yet. Everything outside the block is returned unchanged."""
    inner = body.rstrip("\n")
    block = f"{begin_marker(name)}\n{inner}\n{end_marker(name)}"
    span = _span(text, name, where)
    if span is not None:
        return text[: span[0]] + block + text[span[1]:]
    if not text:
        return block + "\n"
    return text + ("\n" if text.endswith("\n") else "\n\n") + block + "\n"


def _read(path: Path) -> str:
    # newline="": keep \r\n (or any line ending) as it is, byte for byte
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def check_results_file(path: str | Path, name: str) -> None:
    """Before the experiment runs (hours): the file, if there is one, must be writable back, i.e. readable UTF-8
    with well-formed markers for this experiment. Raises ResultsFileError."""
    p = Path(path)
    if not p.exists():
        return
    try:
        _span(_read(p), name, str(p))
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFileError(f"{p}: experiment.results_path cannot be read as UTF-8 text: {e}") from e


def write_results_block(path: str | Path, name: str, body: str) -> Path:
    """Replace (or append) the experiment's block in ``path`` atomically: readers see the old or the new file."""
    from unispeech_platform.data.summary import atomic_write_text

    p = Path(path)
    try:
        text = _read(p) if p.exists() else ""
        new = replace_block(text, name, body, str(p))
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, new)
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFileError(f"{p}: the results block could not be written ({e}); the results are printed "
                               "above and logged to the parent MLflow run") from e
    return p
