"""Every refusal is one line naming the file, row, flag or key, with the right exit code (issue 30, item 6): a
non-UTF-8 manifest, a FIFO as a Kaldi table, Kaldi segments with bad times (those rows fail, the rest imports),
a broken validate_data --vocab and a --report in a missing directory (both before Ray), a model whose config.json
disagrees with its weights, a vocabulary without <s>, a pickled model (refused unopened, with no advice to
unpickle it), a model with NaN weights (transcription and evaluation fail instead of writing empty text), bad
numeric flags, a missing word list, and the OSErrors the environment causes.

The jobs run as subprocesses, as a user runs them; each test also checks that nothing outside the job's output
changed (tests/tree_guard.py). No Ray, except the one evaluation case, which needs its actor pool (marked slow).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from evaluate_helpers import ROOT, tiny_ctc_model
from tree_guard import assert_unchanged, tree_digest

from unispeech_platform.runtime.cli import run_or_exit


def _tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _corpus(root: Path) -> Path:
    """Two rows written by our own writer (milliseconds): enough for validate_data's pre-Ray checks."""
    from unispeech_platform.data.audio import encode_flac
    from unispeech_platform.data.writer import CorpusWriter

    with CorpusWriter(root) as writer:
        for i in range(2):
            wave = _tone(1.0, i)
            writer.write("en", "train", {"id": f"u{i}", "audio": encode_flac(wave, 16000), "sample_rate": 16000,
                                         "num_samples": len(wave), "speaker": "s", "text": "a b", "phones": "a b"})
    return root


def _edit_weights(model: Path, out: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, out)
    state = load_file(out / "model.safetensors")
    edit(state)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


class _Payload:
    """Unpickling this creates the marker file: proof that a refused pickle was never unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs made once: audio, a corpus, a tiny model and its broken variants."""
    import torch

    root = tmp_path_factory.mktemp("error-lines")
    (root / "audio").mkdir()
    for i in range(3):
        sf.write(root / "audio" / f"u{i}.wav", _tone(1.0, i), 16000, subtype="PCM_16")
    corpus = _corpus(root / "corpus")
    model = tiny_ctc_model(corpus / "vocab.json", root / "model")
    _edit_weights(model, root / "nan-model", lambda s: s["lm_head.weight"].fill_(float("nan")))
    wide = shutil.copytree(model, root / "wide-model")  # config.json edited after saving
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    no_bos = shutil.copytree(model, root / "no-bos-model")
    vocab = json.loads((no_bos / "vocab.json").read_text())
    del vocab["<s>"]
    (no_bos / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(sorted(vocab, key=vocab.get))}))
    pickled = shutil.copytree(model, root / "pickled-model")
    from safetensors.torch import load_file

    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save({**state, "extra": _Payload(root / "UNPICKLED")}, pickled / "pytorch_model.bin")
    return root


def _run(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"jobs.{module}", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def _one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The exit code, no traceback, exactly one non-empty line on stderr (returned)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and "Traceback" not in proc.stderr and len(lines) == 1, (proc.returncode,
                                                                                          proc.stderr)
    return lines[0]


def _last_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """For argparse errors (usage, then the error) and Ray's own log lines: the exit code, no traceback, the last
    non-empty stderr line (returned)."""
    assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    return proc.stderr.strip().splitlines()[-1]


# ---- import: source text files and Kaldi segments -----------------------------------------------------------

def test_a_latin1_manifest_is_one_line_naming_the_file_line_and_byte(world, tmp_path):
    manifest = tmp_path / "train.tsv"
    manifest.write_bytes(f"path\ttext\n{world}/audio/u0.wav\thello\n{world}/audio/u1.wav\tcaf\xe9\n"
                         .encode("latin-1"))
    before = tree_digest(world), tree_digest(tmp_path)
    proc = _run("import_dataset", "--format", "manifest", "--input", manifest, "--out", tmp_path / "out",
                "--lang", "en", "--workers", "1", "--no-progress")
    line = _one_line(proc, 3)
    assert f"{manifest}: not UTF-8 at line 3 (byte" in line and "0xe9" in line, line
    assert not (tmp_path / "out").exists()  # refused before the first row
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))


def test_a_fifo_as_a_kaldi_table_is_refused_unopened(world, tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    (data / "wav.scp").write_text(f"r0 {world}/audio/u0.wav\n")
    os.mkfifo(data / "text")  # opening it to read would block the import forever
    before = tree_digest(world), tree_digest(tmp_path)
    proc = _run("import_dataset", "--format", "kaldi", "--input", data, "--out", tmp_path / "out", "--lang", "en",
                "--workers", "1", "--no-progress")
    assert _one_line(proc, 3) == f"setup error: {data / 'text'}: not a regular file"
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))


def test_bad_segment_times_fail_their_rows_and_the_rest_is_imported(world, tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    (data / "wav.scp").write_text(f"r0 {world}/audio/u0.wav\n")
    bad = {"abc": "abc 0.9", "nan": "nan 0.9", "inf": "0.1 inf", "negative": "-1 0.5", "reversed": "0.8 0.2",
           "short": ""}
    lines = ["good r0 0.0 0.6"] + [f"{utt} r0 {times}".strip() for utt, times in bad.items()]
    (data / "segments").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    before = tree_digest(world), tree_digest(tmp_path, skip=(out,))
    proc = _run("import_dataset", "--format", "kaldi", "--input", data, "--out", out, "--lang", "en",
                "--workers", "1", "--no-progress")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # 1: some rows failed
    report = [row.split("\t") for row in (out / "import_report.tsv").read_text().splitlines()[1:]]
    assert {r[1]: (r[0], r[4]) for r in report} == {
        utt: (f"{data / 'segments'}:{n}", "bad_segment") for n, utt in enumerate(bad, 2)}
    assert json.loads((out / "summary.json").read_text())["total"]["utterances"] == 1  # the good segment
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path, skip=(out,)))


# ---- validate_data: --vocab and --report before Ray --------------------------------------------------------

@pytest.mark.parametrize("case", ["not_json", "no_bos", "missing"])
def test_a_broken_vocab_stops_validate_data_before_ray(world, tmp_path, case):
    vocab = tmp_path / "vocab.json"
    if case == "not_json":
        vocab.write_text("phones: a b c\n")
    elif case == "no_bos":
        shutil.copy(world / "no-bos-model" / "vocab.json", vocab)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # a starting Ray makes its session dir here
    try:
        before = tree_digest(world), tree_digest(tmp_path)
        proc = _run("validate_data", world / "corpus", "--vocab", vocab, env={"RAY_TMPDIR": str(ray_tmp)})
        line = _one_line(proc, 3)
        assert not any(ray_tmp.iterdir())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert str(vocab) in line and {"not_json": "not valid JSON", "no_bos": "lacks the special token '<s>'",
                                   "missing": "not found"}[case] in line, line
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))


@pytest.mark.parametrize("case", ["missing_directory", "a_directory", "under_a_file"])
def test_a_report_that_cannot_be_written_stops_validate_data_before_any_work(world, tmp_path, case):
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    report = {"missing_directory": tmp_path / "no-such-dir" / "r.json", "a_directory": tmp_path,
              "under_a_file": tmp_path / "notes.txt" / "r.json"}[case]
    before = tree_digest(world), tree_digest(tmp_path)
    line = _one_line(_run("validate_data", world / "corpus", "--report", report), 3)
    assert line.startswith(f"ERROR: --report {report}: ") and {
        "missing_directory": f"the directory {report.parent} does not exist", "a_directory": "is a directory",
        "under_a_file": f"{report.parent} is not a directory"}[case] in line, line
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))


# ---- models: errors name the model; NaN outputs fail ---------------------------------------------------------

@pytest.mark.parametrize("model, named, says", [
    ("wide-model", "wide-model: checkpoint tensor", "expects"),
    ("no-bos-model", "no-bos-model/vocab.json: vocabulary lacks", "'<s>'"),
    ("pickled-model", "pickled-model/pytorch_model.bin: refused to unpickle", "model.safetensors"),
    ("nan-model", "nan-model: the model outputs NaN or inf", "u0.wav"),
])
def test_a_bad_model_is_one_line_naming_it_and_no_transcript_is_written(world, tmp_path, model, named, says):
    out = tmp_path / "out.jsonl"
    before = tree_digest(world), tree_digest(tmp_path)
    proc = _run("transcribe", "--model", world / model, "--out", out, world / "audio" / "u0.wav", "--no-progress")
    line = _one_line(proc, 3)
    assert line.startswith("setup error: ") and f"{world}/{named}" in line and says in line, line
    assert "weights_only=False" not in proc.stderr
    assert not (world / "UNPICKLED").exists()  # the payload never ran
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))  # no out.jsonl, no out.jsonl.partial


@pytest.mark.slow
def test_evaluation_of_a_nan_model_exits_3_naming_it(world, tmp_path):
    """Evaluation needs its Ray Data actor pool: the actors mark the batch, the driver fails the job."""
    out = tmp_path / "eval"
    before = tree_digest(world), tree_digest(tmp_path, skip=(out,))
    proc = _run("evaluate", "--config", ROOT / "configs" / "evaluate_tiny.yaml", "--set",
                f"evaluate.model_path={world / 'nan-model'}", "--set", f"data.path={world / 'corpus'}",
                "--set", "evaluate.splits=[train]", "--set", f"evaluate.output_dir={out}",
                "--set", "tracking.enabled=false", "--set", "ray.local_num_cpus=2")
    line = _last_line(proc, 3)
    assert line.startswith(f"setup error: {world / 'nan-model'}: the model outputs NaN or inf (first on utterance u")
    assert not list(out.glob("per*"))  # no scores written
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path, skip=(out,)))


# ---- flags and the environment -------------------------------------------------------------------------------

@pytest.mark.parametrize("module, args, code, says", [
    ("transcribe", ["--batch-size", "0"], 2, "argument --batch-size: must be at least 1, got 0"),
    ("transcribe", ["--chunk-seconds", "nan"], 2, "argument --chunk-seconds: must be a finite number"),
    ("make_corpus", ["--speakers", "20"], 2, "bad flags: at most 13 speakers per language"),
    ("make_corpus", ["--langs", "xx-nope"], 3, "setup error: wordfreq has no word list for 'xx-nope'"),
])
def test_bad_flags_and_missing_tools_are_the_last_line(world, tmp_path, module, args, code, says):
    out = tmp_path / "out"
    common = {"transcribe": ["--model", world / "model", "--out", out, world / "audio" / "u0.wav", "--no-progress"],
              "make_corpus": ["--out", out, "--per-lang", "2", "--workers", "1"]}[module]
    before = tree_digest(world), tree_digest(tmp_path)
    line = _last_line(_run(module, *common, *args), code)
    assert says in line, line
    assert_unchanged(before[0], tree_digest(world))
    assert_unchanged(before[1], tree_digest(tmp_path))


@pytest.mark.parametrize("error, line", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.flac"),
     "setup error: /data/x.flac: Permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out", None, "/mnt/ro/out.tmp"),
     "setup error: /mnt/ro/out -> /mnt/ro/out.tmp: Read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "setup error: No space left on device (while writing the job's output)"),
    (FileExistsError("corpus/ holds a corpus made with other arguments"),
     "setup error: corpus/ holds a corpus made with other arguments"),
])
def test_run_or_exit_turns_environment_oserrors_into_one_line(error, line, capsys):
    def fail():
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_or_exit(fail)
    assert exit_.value.code == 3 and capsys.readouterr().err.strip() == line


def test_run_or_exit_keeps_the_traceback_of_other_oserrors():
    def fail():  # no file named, not a full disk: ours or the network's to explain, with its traceback
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        run_or_exit(fail)
