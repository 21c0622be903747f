"""Issue 30, item 1: one rule for every path a job writes or removes (runtime/output_paths.py,
docs/data.md#where-a-job-writes). Real jobs as subprocesses on real files, FIFOs and device nodes, no Ray: a language
value from data never names a path, an import never deletes or replaces what it did not make, transcribe never
replaces an input, a directory, a FIFO or a device, an export never swaps out a foreign directory, and a write that
fails mid-output leaves no half file. Each asserts the exit code, the one line and that nothing outside the output
changed (tests/tree_guard.py)."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import PHONES, encode, good_rows, tone, write_part
from evaluate_helpers import tiny_ctc_model
from tree_guard import assert_unchanged, tree_digest

from unispeech_core.checkpoint import swap_dir
from unispeech_core.export_dir import NotAnExportError
from unispeech_platform.runtime.output_paths import MARKER

REPO = Path(__file__).resolve().parents[1]
TRAVERSAL = "x/../../../../somewhere"


def run_job(module: str, *args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``python -m jobs.<module> args`` from the repository root; ``limit_bytes``: RLIMIT_FSIZE with SIGXFSZ
    ignored, so a write past it fails with EFBIG as on a full quota."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", f"jobs.{module}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit if limit_bytes else None)


def one_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The exit code is ``code`` and stderr is exactly one non-empty line, containing every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three 1 s WAV clips and a manifest naming them (no language column values yet)."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        (root / f"c{i}.wav").write_bytes(encode(tone(16000, 1.0), 16000, "WAV"))
    return root


def manifest(clips: Path, langs: list[str]) -> Path:
    path = clips / f"m{abs(hash(tuple(langs)))}.tsv"
    path.write_text("path\tsentence\tlanguage\n" + "".join(f"c{i}.wav\thola\t{lang}\n" for i, lang in enumerate(langs)))
    return path


def import_args(source: Path, out: Path, *extra: str) -> list[str]:
    return ["--format", "manifest", "--input", str(source), "--out", str(out), "--executor", "processes",
            "--workers", "1", "--no-progress", *extra]


def test_a_language_from_data_never_names_a_path(clips, tmp_path):
    source = manifest(clips, ["es", TRAVERSAL, "es"])
    out = tmp_path / "a" / "b" / "c" / "out"  # the value climbs to <tmp>/a/somewhere
    out.parent.mkdir(parents=True)
    before = tree_digest(tmp_path)
    proc = run_job("import_dataset", *import_args(source, out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # 1: some rows failed
    assert_unchanged(before, tree_digest(tmp_path, skip=(out,)))  # no <tmp>/a/somewhere/split=train
    report = (out / "import_report.tsv").read_text()
    assert f"unsafe_name\tlanguage {TRAVERSAL!r} cannot name a directory" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["utterances"] == 2 and list(summary["languages"]) == ["es"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "lang=es/split=train/part-00000.parquet"]


def user_dir(root: Path) -> Path:
    """The issue's directory: no summary.json, someone's lang=xx Parquet, notes, a vocab.json."""
    (root / "lang=xx" / "split=train").mkdir(parents=True)
    (root / "lang=xx" / "split=train" / "part-00000.parquet").write_bytes(b"PAR1 theirs PAR1")
    (root / "lang=notes").mkdir()
    (root / "lang=notes" / "important.txt").write_text("keep me")
    (root / "vocab.json").write_text('{"theirs": 0}')
    (root / "notes.txt").write_text("mine")
    return root


def test_an_import_removes_and_replaces_only_what_it_made(clips, tmp_path):
    source = manifest(clips, ["es", "es", "es"])
    out = user_dir(tmp_path / "out")
    before = tree_digest(tmp_path)
    refused = run_job("import_dataset", *import_args(source, out, "--lang", "es"))
    one_line(refused, 3, str(out), "not empty", "--overwrite")
    assert_unchanged(before, tree_digest(tmp_path))
    # --overwrite lets it write beside the user's entries, never over them: their vocab.json stops it
    refused = run_job("import_dataset", *import_args(source, out, "--lang", "es", "--overwrite"))
    one_line(refused, 3, str(out / "vocab.json"), "not made by")
    assert_unchanged(before, tree_digest(tmp_path))

    (out / "vocab.json").unlink()  # the user moves their file away
    theirs = tree_digest(tmp_path, skip=(out / MARKER,))
    done = run_job("import_dataset", *import_args(source, out, "--lang", "es", "--overwrite"))
    assert done.returncode == 0, done.stderr
    assert (out / "lang=es" / "split=train" / "part-00000.parquet").is_file()
    ours = ("lang=es", "summary.json", "vocab.json", "import_report.tsv", MARKER)
    assert_unchanged(theirs, tree_digest(tmp_path, skip=tuple(out / n for n in ours)))

    # a file the user puts inside one of our directories survives our --overwrite, and so does that directory
    (out / "lang=es" / "split=train" / "theirs.txt").write_text("mine too")
    done = run_job("import_dataset", *import_args(source, out, "--lang", "es", "--split", "dev", "--overwrite"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "lang=es" / "split=train").iterdir()) == ["theirs.txt"]
    assert (out / "lang=es" / "split=dev" / "part-00000.parquet").is_file()

    # a partition name taken by someone else's directory is refused even with --overwrite
    ours = tuple(out / n for n in ("lang=es", "summary.json", "vocab.json", "import_report.tsv", MARKER))
    before = tree_digest(tmp_path, skip=ours)
    refused = run_job("import_dataset", *import_args(source, out, "--lang", "xx", "--overwrite"))
    one_line(refused, 3, str(out / "lang=xx"), "not made by")
    assert_unchanged(before, tree_digest(tmp_path, skip=ours))


def test_a_corpus_of_an_earlier_version_is_still_ours(clips, tmp_path):
    """summary.json marks a corpus an earlier version wrote (no marker): a re-run reuses it, --overwrite replaces
    exactly its partitions."""
    source = manifest(clips, ["es", "es", "es"])
    out = tmp_path / "out"
    assert run_job("import_dataset", *import_args(source, out, "--lang", "es")).returncode == 0
    (out / MARKER).unlink()
    before = tree_digest(tmp_path)
    again = run_job("import_dataset", *import_args(source, out, "--lang", "es"))
    assert again.returncode == 0 and "reusing it" in again.stdout, again.stderr
    assert_unchanged(before, tree_digest(tmp_path))
    (out / "notes.txt").write_text("mine")
    replaced = run_job("import_dataset", *import_args(source, out, "--lang", "pt", "--overwrite"))
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "import_report.tsv", "lang=pt", "notes.txt", "summary.json", "vocab.json"])


def test_an_import_never_writes_over_its_input(clips, tmp_path):
    source = manifest(clips, ["es", "es", "es"])
    before = tree_digest(clips)
    proc = run_job("import_dataset", *import_args(source, source, "--lang", "es"))
    one_line(proc, 3, f"--out {source}", "is the input")
    assert_unchanged(before, tree_digest(clips))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from unispeech_core import PhoneTokenizer

    tmp = tmp_path_factory.mktemp("model")
    return tiny_ctc_model(PhoneTokenizer.from_phones(["a b c"]).save(tmp / "vocab.json"), tmp / "model")


def special_node(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
        return path
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path


@pytest.mark.parametrize("kind", ["input", "fifo", "device", "directory"])
def test_transcribe_refuses_an_out_it_must_not_replace(clips, model, tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    audio = work / "c0.wav"
    audio.write_bytes((clips / "c0.wav").read_bytes())
    out = {"input": audio, "fifo": work / "out.jsonl", "device": work / "out.jsonl",
           "directory": work / "outdir"}[kind]
    if kind in ("fifo", "device"):
        special_node(out, kind)
    elif kind == "directory":
        out.mkdir()
        (out / "results.txt").write_text("theirs")
    before = tree_digest(tmp_path)
    proc = run_job("transcribe", "--model", str(model), "--out", str(out), "--no-progress", str(audio))
    expected = {"input": "is the input", "fifo": "is a FIFO", "device": "is a character device",
                "directory": "is a directory"}[kind]
    one_line(proc, 3, f"--out {out}", expected)
    assert_unchanged(before, tree_digest(tmp_path))  # the node is still a node; no out.partial anywhere


def test_transcribe_keeps_a_file_that_is_not_a_transcription(clips, model, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("my notes\n")
    before = tree_digest(tmp_path)
    proc = run_job("transcribe", "--model", str(model), "--out", str(out), "--no-progress", str(clips / "c0.wav"))
    one_line(proc, 3, f"--out {out}", "not an earlier transcription", "--overwrite")
    assert_unchanged(before, tree_digest(tmp_path))


def test_a_write_failing_mid_output_leaves_no_half_file(clips, model, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("")  # an earlier (empty) output: it must still be there, whole, after the failed run
    before = tree_digest(tmp_path)
    proc = run_job("transcribe", "--model", str(model), "--out", str(out), "--no-progress",
                   *(str(clips / f"c{i}.wav") for i in range(3)), limit_bytes=200)
    one_line(proc, 3, f"--out {out}", "cannot write it", "File too large")
    assert_unchanged(before, tree_digest(tmp_path))


def test_an_export_never_swaps_out_a_foreign_directory(tmp_path):
    """checkpoint.export_dir naming a project directory that holds a config.json: the training job stops in its
    preflight (exit 3, before Ray), and the swap itself refuses it too."""
    corpus = tmp_path / "corpus"
    from unispeech_core import PhoneTokenizer

    write_part(corpus, "es", "train", good_rows("es", 4))
    PhoneTokenizer.from_phones([PHONES]).save(corpus)
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"lr": 0.1}')
    (project / "train.py").write_text("print('mine')")
    before = tree_digest(tmp_path, skip=(tmp_path / "runs",))
    proc = run_job("pretrain", "--config", "configs/tiny.yaml", "--set", f"data.path={corpus}",
                   "--set", f"checkpoint.storage_path={tmp_path / 'runs'}", "--set", f"checkpoint.export_dir={project}",
                   "--set", "tracking.enabled=false")
    one_line(proc, 3, f"checkpoint.export_dir: {project}", "not a model export")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "config.json").write_text("{}")
    with pytest.raises(NotAnExportError, match="not a model export"):
        swap_dir(staged, project)
    assert_unchanged(before, tree_digest(tmp_path, skip=(tmp_path / "runs", staged)))
