"""(Issue 30) Hostile Parquet and audio: a corrupt row group costs only its own rows, with the file and the group
named, in the validator, the Hugging Face importer and training's reader; a cut Parquet footer is one line; streamed
FLAC (no length in its header) decodes to its end; a WAV cut short of its header is a failed row; a slow audio read
meets its deadline; and random byte flips of a small corpus never cost a readable row, a traceback or a hang.

Real files throughout: Parquet written by pyarrow and damaged at known offsets from its own footer (a page header,
a compressed values page, a data page, the footer), FLAC written by libsndfile into a pipe. Only two tests start
Ray (the validator's and training's Ray readers share one local Ray); the rest run the jobs in this process with
their no-Ray paths, or as subprocesses where the CLI's one line and exit code are the point. Every test checks that
nothing outside the job's output changed (tests/tree_guard.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from data_helpers import PHONES, encode, tone
from train_helpers import local_ray
from tree_guard import assert_unchanged, tree_digest

from jobs import import_dataset, validate_data
from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.audio import decode_audio
from unispeech_platform.data.importers.common import REPORT_FILE
from unispeech_platform.data.row_groups import UnreadableRowGroup
from unispeech_platform.data.schema import SCHEMA, partition_dir
from unispeech_platform.data.summary import read_summary

REPO = Path(__file__).resolve().parents[1]
GROUPS, GROUP_ROWS = 4, 4
PART = "lang=es/split=train/part-00000.parquet"


def corpus_rows(count: int = GROUPS * GROUP_ROWS) -> list[dict]:
    """Short FLAC rows of the corpus schema (also an HF-importable Parquet: binary audio, text, id, phones)."""
    return [{"id": f"utt-{i:03d}", "audio": encode(tone(16000, 0.1, freq=300 + 10 * i), 16000, "FLAC"),
             "sample_rate": 16000, "num_samples": 1600, "speaker": f"spk{i % 2}", "text": "hola mundo",
             "phones": PHONES} for i in range(count)]


def write_corpus(root: Path, rows: list[dict] | None = None) -> Path:
    """A one-part corpus of GROUPS row groups of GROUP_ROWS rows, zstd-compressed as the corpus writer does."""
    part = partition_dir(root, "es", "train") / "part-00000.parquet"
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows or corpus_rows(), schema=SCHEMA), part, row_group_size=GROUP_ROWS,
                   compression="zstd")
    PhoneTokenizer.from_phones([PHONES]).save(root)
    return part


def damage(path: Path, group: int, kind: str) -> None:
    """Flip bytes of the ``audio`` column of one row group at an offset its footer gives: the data page's header
    (thrift), the compressed dictionary page holding the audio values, or the tail of the data page."""
    meta = pq.read_metadata(path)
    rg = meta.row_group(group)
    col = next(rg.column(c) for c in range(rg.num_columns) if rg.column(c).path_in_schema == "audio")
    start = col.dictionary_page_offset or col.data_page_offset
    offset = {"page_header": col.data_page_offset, "values_page": start + 30,
              "data_page": start + col.total_compressed_size - 8}[kind]
    data = bytearray(path.read_bytes())
    for i in range(8):
        data[offset + i] ^= 0x5A
    path.write_bytes(bytes(data))


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("kind", ["page_header", "values_page", "data_page"])
@pytest.mark.parametrize("group", [0, 2, 3])
def test_validate_fails_only_the_unreadable_row_group(tmp_path, capsys, group, kind):
    """First, middle or last group; its page header, its values or its data page: exit 1, one BAD line naming the
    file and the group (its 4 rows counted bad), the other 12 rows checked and valid, a report that says so."""
    root = tmp_path / "corpus"
    part = write_corpus(root)
    damage(part, group, kind)
    report = tmp_path / "report.json"
    before = tree_digest(tmp_path, skip=(report,))
    assert validate_data.main([str(root), "--executor", "local", "--report", str(report)]) == 1
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    bad = [line for line in lines(out) if line.startswith("BAD")]
    assert len(bad) == 1 and f"{part}: row group {group} of {GROUPS} (rows {group * 4}-{group * 4 + 3}, 4 rows)" \
        in bad[0] and "unreadable_row_group" in bad[0], out
    assert "4 bad rows (unreadable_row_group=4)" in out
    saved = json.loads(report.read_text())
    assert saved["stats"]["total"]["utterances"] == 12 and saved["reasons"] == {"unreadable_row_group": 4}
    assert [(b["id"], b["rows"]) for b in saved["bad"]] == [(f"<row group {group}: 4 rows>", 4)]
    assert_unchanged(before, tree_digest(tmp_path, skip=(report,)))


def test_a_cut_footer_is_one_line_naming_the_part(tmp_path):
    """A part cut short (its footer gone): validate_data exits 3 with one line naming it, before Ray starts."""
    root = tmp_path / "corpus"
    part = write_corpus(root)
    part.write_bytes(part.read_bytes()[:-200])
    before = tree_digest(tmp_path)
    done = subprocess.run([sys.executable, "-m", "jobs.validate_data", str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert lines(done.stderr) == [lines(done.stderr)[0]] and str(part) in done.stderr
    assert "not a readable Parquet file" in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert_unchanged(before, tree_digest(tmp_path))


def _import(source: Path, out: Path, *extra: str) -> int:
    return import_dataset.main(["--format", "hf", "--input", str(source), "--out", str(out), "--lang", "es",
                                "--workers", "1", "--no-progress", *extra])


def test_hf_import_keeps_every_readable_row_group(tmp_path, capsys):
    """An HF Parquet with a damaged middle row group, beside an intact file: the other 12 + 16 rows are imported,
    the group is one report line naming the file and the group, its 4 rows counted as not imported (exit 1)."""
    src = tmp_path / "hf"
    src.mkdir()
    damaged = src / "train-00000-of-00002.parquet"
    pq.write_table(pa.Table.from_pylist(corpus_rows(), schema=SCHEMA), damaged, row_group_size=GROUP_ROWS,
                   compression="zstd")
    damage(damaged, 1, "values_page")
    rows = [{**r, "id": f"other-{i}"} for i, r in enumerate(corpus_rows())]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), src / "train-00001-of-00002.parquet")
    out = tmp_path / "out"
    before = tree_digest(tmp_path, skip=(out,))
    assert _import(src, out) == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    imported = pq.read_table(out / "lang=es").column("id").to_pylist()
    assert sorted(imported) == sorted([f"utt-{i:03d}" for i in range(16) if not 4 <= i < 8] +
                                      [f"other-{i}" for i in range(16)])
    report = lines((out / REPORT_FILE).read_text())[1:]
    assert len(report) == 1 and f"{damaged}#row_group=1" in report[0] and "unreadable_row_group" in report[0]
    assert "row group 1 of 4 (rows 4-7, 4 rows)" in report[0]
    assert read_summary(out)["failed"] == {"unreadable_row_group": 4}
    assert "4 rows not imported" in printed.out
    assert_unchanged(before, tree_digest(tmp_path, skip=(out,)))


def test_hf_import_of_a_cut_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A truncated HF Parquet (footer gone) beside a good file: exit 3, one line naming it, no output (as a
    subprocess: the CLI's line); alone: the same in this process. Without its footer neither its rows nor how many
    were lost are known, so the import stops before the first row rather than import a corpus missing a shard."""
    src = tmp_path / "hf"
    src.mkdir()
    cut = src / "train-00000-of-00002.parquet"
    pq.write_table(pa.Table.from_pylist(corpus_rows(), schema=SCHEMA), cut, row_group_size=GROUP_ROWS)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    pq.write_table(pa.Table.from_pylist(corpus_rows(4), schema=SCHEMA), src / "train-00001-of-00002.parquet")
    alone = tmp_path / "alone.parquet"
    alone.write_bytes(cut.read_bytes())
    out = tmp_path / "out"
    before = tree_digest(tmp_path)
    done = subprocess.run([sys.executable, "-m", "jobs.import_dataset", "--format", "hf", "--input", str(src),
                           "--out", str(out), "--lang", "es", "--workers", "1", "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert len(lines(done.stderr)) == 1 and str(cut) in done.stderr and "not a readable Parquet file" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    with pytest.raises(SystemExit) as refused:
        _import(alone, out)
    err = capsys.readouterr().err
    assert refused.value.code == 3 and len(lines(err)) == 1 and str(alone) in err
    assert not out.exists()
    assert_unchanged(before, tree_digest(tmp_path))


def flac_through_a_pipe(wave: np.ndarray, rate: int) -> bytes:
    """A FLAC as an encoder writes it to a pipe: libsndfile cannot seek back to fill in STREAMINFO's length."""
    read_fd, write_fd = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(read_fd, "rb").read()))
    reader.start()
    with os.fdopen(write_fd, "wb") as pipe:
        sf.write(pipe, wave, rate, format="FLAC", subtype="PCM_16")
    reader.join()
    return got[0]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # soundfile's tell() on the pipe
def test_streamed_flac_decodes_to_its_end(tmp_path, capsys):
    """A FLAC written into a pipe has total samples 0 in STREAMINFO (libsndfile reads 2^63-1 frames): it is
    imported and validated as the whole clip, with or without the header update libsndfile appends."""
    wave = tone(16000, 1.0)
    streamed = flac_through_a_pipe(wave, 16000)
    assert streamed[:4] == b"fLaC" and int.from_bytes(streamed[18:26], "big") & (2**36 - 1) == 0
    seekable = encode(wave, 16000, "FLAC", "PCM_16")
    for data in (streamed, streamed[: len(seekable)]):  # the second: a stream that ends after its last frame
        decoded = decode_audio(data, 16000, 16000)
        assert decoded.error is None and decoded.wave.shape == (1, 16000)
    src = tmp_path / "hf" / "train.parquet"
    src.parent.mkdir()
    rows = [{"id": "streamed", "audio": {"bytes": streamed, "path": "s.flac"}, "text": "hola"},
            {"id": "plain", "audio": {"bytes": seekable, "path": "p.flac"}, "text": "hola"}]
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out"
    before = tree_digest(tmp_path, skip=(out,))
    assert _import(src.parent, out, "--keep-original") == 0
    table = pq.read_table(out / "lang=es")
    assert dict(zip(table.column("id").to_pylist(), table.column("num_samples").to_pylist())) == \
        {"streamed": 16000, "plain": 16000}
    assert "Traceback" not in capsys.readouterr().err
    assert validate_data.main([str(out), "--executor", "local"]) == 0  # the corpus keeps the streamed bytes
    assert "OK: all 2 rows valid" in capsys.readouterr().out
    assert_unchanged(before, tree_digest(tmp_path, skip=(out,)))


def test_a_wav_cut_short_of_its_header_is_a_failed_row(tmp_path, capsys):
    """A WAV whose data chunk says 1 s but holds 0.5 s, named by a manifest without num_samples: the row fails
    as truncated (it was imported as the short clip with the whole transcript); the intact WAV is imported."""
    clips = tmp_path / "clips"
    clips.mkdir()
    wav = encode(tone(16000, 1.0), 16000, "WAV", "PCM_16")
    (clips / "whole.wav").write_bytes(wav)
    (clips / "cut.wav").write_bytes(wav[: len(wav) // 2])
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tsentence\nclips/whole.wav\thola mundo\nclips/cut.wav\thola mundo\n")
    out = tmp_path / "out"
    before = tree_digest(tmp_path, skip=(out,))
    assert import_dataset.main(["--format", "manifest", "--input", str(manifest), "--out", str(out), "--lang", "es",
                                "--workers", "1", "--no-progress"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert pq.read_table(out / "lang=es").column("id").to_pylist() == ["whole"]
    (failed,) = lines((out / REPORT_FILE).read_text())[1:]
    assert "\tcut\t" in failed and "\ttruncated\t" in failed and "header promises a 32000-byte data chunk" in failed
    assert_unchanged(before, tree_digest(tmp_path, skip=(out,)))


def test_an_audio_read_past_its_deadline_fails_its_row(tmp_path, capsys):
    """--audio-read-timeout: a 4 MiB regular file cannot be read in a microsecond (the deadline is checked after
    each 1 MiB read), so its row fails as audio_read_timeout; a one-read file is imported. --max-audio-mb caps."""
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "small.wav").write_bytes(encode(tone(16000, 1.0), 16000, "WAV", "PCM_16"))
    (clips / "big.wav").write_bytes(encode(tone(16000, 140.0), 16000, "WAV", "PCM_16"))  # 4.5 MB
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tsentence\nclips/small.wav\thola\nclips/big.wav\thola\n")
    outs = {"timeout": tmp_path / "out-timeout", "cap": tmp_path / "out-cap"}
    before = tree_digest(tmp_path, skip=tuple(outs.values()))
    for what, flags in (("timeout", ["--audio-read-timeout", "0.000001"]), ("cap", ["--max-audio-mb", "1"])):
        assert import_dataset.main(["--format", "manifest", "--input", str(manifest), "--out", str(outs[what]),
                                    "--lang", "es", "--workers", "1", "--no-progress", *flags]) == 1
        assert pq.read_table(outs[what] / "lang=es").column("id").to_pylist() == ["small"]
    assert "Traceback" not in capsys.readouterr().err
    (timed_out,) = lines((outs["timeout"] / REPORT_FILE).read_text())[1:]
    assert "\tbig\t" in timed_out and "\taudio_read_timeout\t" in timed_out and "deadline" in timed_out
    (too_large,) = lines((outs["cap"] / REPORT_FILE).read_text())[1:]
    assert "\taudio_file_too_large\t" in too_large and "1048576-byte cap" in too_large
    for flag, value in (("--audio-read-timeout", "nan"), ("--max-audio-mb", "0")):
        with pytest.raises(SystemExit) as refused:
            import_dataset.main(["--format", "manifest", "--input", str(manifest), "--out", str(tmp_path / "x"),
                                 "--lang", "es", flag, value])
        assert refused.value.code == 2
    assert "must be positive numbers" in capsys.readouterr().err
    assert_unchanged(before, tree_digest(tmp_path, skip=tuple(outs.values())))


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


def test_validate_on_ray_and_training_name_the_unreadable_row_group(ray_local, tmp_path, capfd):
    """On Ray: the validator lists the damaged group and checks the rest (it printed a 250-line Ray traceback
    naming no file, exit 1); training's reader stops with the file and the group, and the crash-loop diagnosis
    quotes that line; the local reader (evaluation) raises the same one-line error."""
    from unispeech_platform.data.pipeline import build_dataset, iter_local_batches
    from unispeech_platform.train.faults import likely_cause

    root = tmp_path / "corpus"
    part = write_corpus(root)
    damage(part, 2, "page_header")
    before = tree_digest(tmp_path)
    assert validate_data.main([str(root)]) == 1
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "4 bad rows (unreadable_row_group=4)" in out
    assert f"{part}: row group 2 of 4 (rows 8-11, 4 rows) cannot be read" in out
    assert "valid rows" in out and "│ es   │ train │         12 │" in out

    named = f"{part}: row group 2 of 4 (rows 8-11, 4 rows) cannot be read"
    cfg = DataConfig(path=str(root), max_batch_seconds=8.0, max_duration_s=8.0, max_batch_size=4,
                     decode_batch_rows=4, read_piece_rows=4)
    with pytest.raises(Exception) as caught:
        for _ in build_dataset(cfg, "train").iter_batches(batch_size=None, batch_format="pyarrow"):
            pass
    cause = likely_cause(caught.value)
    assert cause.startswith("unreadable data: ") and named in cause and "jobs.validate_data" in cause, cause
    with pytest.raises(UnreadableRowGroup, match="row group 2 of 4"):
        list(iter_local_batches(cfg, "train"))
    assert_unchanged(before, tree_digest(tmp_path))


# -- fuzz: random byte flips of a small corpus ---------------------------------------------------------------------

FUZZ_CASES, FUZZ_SEED, CASE_TIMEOUT_S = 24, 30, 20
EXIT_CODES = {0, 1, 3}
"""validate_data: 0 valid, 1 bad rows, 3 unreadable layout/footer; import_dataset: 0, 1 rows failed, 3 unusable."""


def readable(path: Path) -> tuple[bool, dict[str, set[str]]]:
    """Independently of the jobs: whether pyarrow reads the footer, and per readable row group (plain
    ``read_row_group``) the ids of its rows whose audio libsndfile decodes whole, as the row declares it."""
    try:
        pf = pq.ParquetFile(path)
        if pf.schema_arrow.names != SCHEMA.names:  # a flipped column name: the footer is what broke
            return False, {}
    except Exception:
        return False, {}
    groups: dict[str, set[str]] = {}
    for g in range(pf.metadata.num_row_groups):
        try:
            rows = pf.read_row_group(g).to_pylist()
        except Exception:
            continue
        ids = set()
        for r in rows:
            try:
                wave, rate = sf.read(io.BytesIO(r["audio"]), dtype="float32", always_2d=True)
            except Exception:
                continue
            if r["id"] and rate == r["sample_rate"] == 16000 and len(wave) == r["num_samples"] and \
                    np.isfinite(wave).all() and set((r["phones"] or "").split()) <= set(PHONES.split()):
                ids.add(r["id"])
        groups[str(g)] = ids
    return True, groups


def run_fuzz_cases(spec: str) -> None:
    """The fuzz driver, in one child process (one import of the jobs for every case): each case's validate_data
    (no Ray) and HF import in this process under an alarm, the outcome written as JSON lines."""
    import contextlib
    import signal

    cfg = json.loads(Path(spec).read_text())

    def alarm(*_):
        raise TimeoutError("case took too long")

    signal.signal(signal.SIGALRM, alarm)
    with open(cfg["results"], "w") as results:
        for case in cfg["cases"]:
            outcome = {"case": case["name"]}
            for job, argv in (("validate", case["validate"]), ("import", case["import"])):
                out, err = io.StringIO(), io.StringIO()
                signal.alarm(CASE_TIMEOUT_S)
                try:
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        module = validate_data if job == "validate" else import_dataset
                        try:
                            code = module.main(argv)
                        except SystemExit as e:
                            code = e.code
                except TimeoutError:
                    code = "hang"
                except Exception as e:  # noqa: BLE001 - an escaped error is the finding
                    code, err = "traceback", io.StringIO(f"Traceback: {type(e).__name__}: {e}")
                finally:
                    signal.alarm(0)
                outcome[job] = {"code": code, "out": out.getvalue()[-4000:], "err": err.getvalue()[-4000:]}
            results.write(json.dumps(outcome) + "\n")
            results.flush()


def test_byte_flips_never_cost_a_readable_row(tmp_path):
    """24 seeded cases of 1-8 flipped bytes anywhere in a 16-row, 4-group part: validate_data and the HF import
    never print a traceback or hang, exit 0/1/3, and keep every row of every row group pyarrow can still read
    whose audio still decodes (validated as valid / imported); exit 3 only when the footer is what broke."""
    rng = np.random.default_rng(FUZZ_SEED)
    pristine = tmp_path / "pristine"
    original = write_corpus(pristine).read_bytes()
    cases, expected = [], {}
    for i in range(FUZZ_CASES):
        data = bytearray(original)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
            data[pos] ^= int(rng.integers(1, 256))
        root = tmp_path / f"case{i:02d}"
        part = write_corpus(root)
        part.write_bytes(bytes(data))
        expected[f"case{i:02d}"] = readable(part)
        cases.append({"name": f"case{i:02d}", "validate": [str(root), "--executor", "local", "--report",
                                                           str(tmp_path / f"report{i:02d}.json")],
                      "import": ["--format", "hf", "--input", str(part), "--out", str(tmp_path / f"out{i:02d}"),
                                 "--lang", "es", "--workers", "1", "--no-progress"]})
    outputs = tuple(tmp_path / f"{kind}{i:02d}{ext}" for i in range(FUZZ_CASES)
                    for kind, ext in (("report", ".json"), ("out", "")))
    spec = tmp_path / "spec.json"
    results = tmp_path / "results.jsonl"
    spec.write_text(json.dumps({"cases": cases, "results": str(results)}))
    before = tree_digest(tmp_path, skip=(*outputs, results))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_hostile_parquet import run_fuzz_cases; run_fuzz_cases({str(spec)!r})")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           timeout=FUZZ_CASES * 2 * CASE_TIMEOUT_S)
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr[-3000:]
    outcomes = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(outcomes) == FUZZ_CASES
    for o in outcomes:
        footer_ok, groups = expected[o["case"]]
        keep = set().union(*groups.values()) if groups else set()
        for job in ("validate", "import"):
            got = o[job]
            assert got["code"] in EXIT_CODES, (o["case"], job, got)
            assert "Traceback" not in got["out"] + got["err"], (o["case"], job, got)
            if got["code"] == 3:  # one line naming the part: only where the footer broke (or no row is left)
                assert len(lines(got["err"])) == 1 and "part-00000.parquet" in got["err"], (o["case"], job, got)
                assert not footer_ok or (job == "import" and not keep), (o["case"], job, got, groups)
        i = o["case"][4:]
        if o["validate"]["code"] in (0, 1):
            saved = json.loads((tmp_path / f"report{i}.json").read_text())
            valid = saved["stats"]["total"]["utterances"]
            flagged = {b["id"] for b in saved["bad"]}
            assert valid >= len(keep) and not (keep & flagged), (o["case"], valid, keep, flagged)
            named = {int(re.search(r"row group (\d+) of", b["detail"])[1]) for b in saved["bad"]
                     if b["reason"] == "unreadable_row_group"}
            assert not named & {int(g) for g in groups}, (o["case"], named, groups)  # never a readable group
        if o["import"]["code"] in (0, 1):
            imported = set(pq.read_table(tmp_path / f"out{i}" / "lang=es").column("id").to_pylist())
            assert keep <= imported, (o["case"], keep - imported)
    assert_unchanged(before, tree_digest(tmp_path, skip=(*outputs, results)))
