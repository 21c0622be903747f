"""jobs.import_dataset on the four sources users bring (real files of each layout, real Parquet, real Ray):
Hugging Face Parquet with `datasets`' schema and metadata (FLAC and MP3 bytes, 48 and 16 kHz), a TSV manifest,
fairseq manifests with .phn, a Kaldi dir with segments. Each -> validate_data exit 0 -> the training data
pipeline reads it; the HF import also trains one real step. A broken-audio row is listed, the rest imported."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_helpers import encode, tone
from train_helpers import local_ray

from jobs import import_dataset, validate_data
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.importers.common import REPORT_FILE, char_tokens, map_split
from unispeech_platform.data.importers.hf import split_of
from unispeech_platform.data.pipeline import build_dataset, iter_batches
from unispeech_platform.data.summary import read_summary

SENTENCES = ["hola mundo", "la casa azul", "el perro come", "buenos días", "una mesa grande", "tres gatos"]


def write_hf_parquet(path: Path, rows: list[dict], rate: int) -> None:
    """What `datasets` writes for a Hub audio set: `audio` struct<bytes, path> plus the `huggingface` metadata."""
    from datasets import Audio, Dataset

    columns = {key: [r[key] for r in rows] for key in rows[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns).cast_column("audio", Audio(sampling_rate=rate)).to_parquet(str(path))


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    src = tmp_path_factory.mktemp("sources")
    flac48 = encode(tone(48000, 1.0, channels=2), 48000, "FLAC")
    mp316 = encode(tone(16000, 1.0), 16000, "MP3")
    rows = [{"id": f"hf-{i}", "audio": {"bytes": flac48 if i % 2 else mp316, "path": f"{i}.x"},
             "transcription": SENTENCES[i], "speaker_id": i % 2} for i in range(4)]
    rows.append({"id": "hf-broken", "audio": {"bytes": b"RIFF not really audio", "path": "b.wav"},
                 "transcription": "hola", "speaker_id": 1})
    write_hf_parquet(src / "hf" / "data" / "train-00000-of-00001.parquet", rows, 16000)
    dev = [{**r, "id": f"hf-dev-{i}"} for i, r in enumerate(rows[:2])] + [rows[0]]  # rows[0]: a repeated id
    write_hf_parquet(src / "hf" / "data" / "validation-00000-of-00001.parquet", dev, 48000)

    wavs = src / "clips"
    wavs.mkdir()
    for i in range(4):
        (wavs / f"c{i}.wav").write_bytes(encode(tone(22050, 1.0), 22050, "WAV"))
    (src / "train.tsv").write_text("path\tsentence\tclient_id\n" + "".join(
        f"clips/c{i}.wav\t{SENTENCES[i]}\tspk{i % 2}\n" for i in range(4)) + "clips/missing.wav\thola\tspk0\n")

    fs = src / "fairseq"
    fs.mkdir()
    for split in ("train", "valid"):
        (fs / f"{split}.tsv").write_text(f"{wavs}\n" + "".join(f"c{i}.wav\t22050\n" for i in range(3)))
        (fs / f"{split}.phn").write_text("o l a | m u n d o\nk a s a\np e r o\n")
        (fs / f"{split}.wrd").write_text("hola mundo\ncasa\nperro\n")

    kd = src / "kaldi" / "train_clean"
    kd.mkdir(parents=True)
    (kd / "long.flac").write_bytes(encode(tone(16000, 3.0), 16000, "FLAC"))
    (kd / "wav.scp").write_text(f"rec1 {kd / 'long.flac'}\nrec2 sph2pipe -f wav x.sph |\n")
    (kd / "segments").write_text("u1 rec1 0.0 1.2\nu2 rec1 1.5 2.9\nu3 rec2 0 1\nu4 rec1 2.95 2.96\nu5 rec1 2 9\n")
    (kd / "text").write_text("u1 hola mundo\nu2 tres gatos\nu3 hola\nu4 hola\nu5 hola\n")
    (kd / "utt2spk").write_text("u1 s1\nu2 s2\nu3 s1\n")
    return {"hf": src / "hf", "manifest": src / "train.tsv", "fairseq": fs, "kaldi": src / "kaldi"}


def _import(fmt: str, source: Path, out: Path, *extra: str) -> int:
    return import_dataset.main(["--format", fmt, "--input", str(source), "--out", str(out), "--lang", "es",
                                "--workers", "1", "--no-progress", *extra])


def _train_ids(root: Path, split: str = "train") -> list[str]:
    cfg = DataConfig(path=str(root), max_batch_seconds=8.0, max_duration_s=8.0, max_batch_size=4,
                     shuffle_buffer_rows=4, decode_batch_rows=4)
    return sorted(i for b in iter_batches(build_dataset(cfg, split), cfg, epoch=0, train=True) for i in b["id"])


def _report(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / REPORT_FILE).read_text().splitlines()[1:]]


def test_split_names_and_char_targets():
    assert [map_split(s) for s in ("validation", "train.clean.100", "test.other", "valid", "dev_clean", "other")] \
        == ["dev", "train", "test", "dev", "dev", "other"]
    root = Path("/d")
    assert split_of(root / "data/train.clean.100-00000-of-00014.parquet", root) == "train"
    assert split_of(root / "validation/0000.parquet", root) == "dev"
    assert char_tokens("¡Hola,  Mundo!") == ["h", "o", "l", "a", "|", "m", "u", "n", "d", "o"]


def test_hf_parquet_imports_validates_and_trains_one_step(ray_local, sources, tmp_path, capsys):
    out = tmp_path / "hf"
    assert _import("hf", sources["hf"], out, "--targets", "phones") == 1  # one row failed, the rest imported
    printed = capsys.readouterr().out
    failed = _report(out)
    assert [(f[1], f[4]) for f in failed] == [("hf-broken", "undecodable"), ("hf-0", "duplicate_id")]
    assert "train-00000-of-00001.parquet:4" in failed[0][0] and "FAILED" in printed and "hf import" in printed
    summary = read_summary(out)
    assert summary["source"]["validation-00000-of-00001.parquet"] == {"audio_sampling_rate": 48000}
    assert summary["languages"]["es"]["train"]["utterances"] == 4
    assert summary["languages"]["es"]["dev"]["utterances"] == 2
    table = pq.read_table(out / "lang=es" / "split=train")
    assert set(table.column("sample_rate").to_pylist()) == {16000}
    assert sorted(table.column("speaker").to_pylist()) == ["0", "0", "1", "1"]
    assert table.column("phones").to_pylist()[0].split() == ["o", "l", "a", "m", "u", "n", "d", "o"]
    assert validate_data.main([str(out)]) == 0
    assert _train_ids(out) == ["hf-0", "hf-1", "hf-2", "hf-3"]
    # One real training step (DeepSpeed, Ray Train) on the imported corpus.
    from train_helpers import ci_job

    from unispeech_platform.train.driver import run_training

    result = run_training(ci_job(out, tmp_path, "import-hf", "train.max_steps=1", "train.num_workers=1",
                                 "train.zero_stage=0"))
    assert result.metrics["step"] == 1


def test_manifest_with_char_targets_lists_the_missing_clip(ray_local, sources, tmp_path):
    out = tmp_path / "manifest"
    assert _import("manifest", sources["manifest"], out, "--targets", "chars", "--workers", "2") == 1  # a pool
    assert [(f[0].rsplit(":", 1)[1], f[4]) for f in _report(out)] == [("6", "missing_audio_file")]
    table = pq.read_table(out / "lang=es" / "split=train")
    assert table.column("phones").to_pylist()[0] == "h o l a | m u n d o"
    assert validate_data.main([str(out)]) == 0
    assert _train_ids(out) == ["c0", "c1", "c2", "c3"]


def test_fairseq_manifest_keeps_its_phones(ray_local, sources, tmp_path):
    out = tmp_path / "fairseq"
    assert _import("fairseq", sources["fairseq"], out) == 0
    assert set(read_summary(out)["languages"]["es"]) == {"train", "dev"}
    table = pq.read_table(out / "lang=es" / "split=dev")
    assert table.column("phones").to_pylist() == ["o l a m u n d o", "k a s a", "p e r o"]
    assert table.column("text").to_pylist()[0] == "hola mundo"
    assert validate_data.main([str(out)]) == 0
    assert _train_ids(out) == ["train-c0", "train-c1", "train-c2"]


def test_kaldi_dir_with_segments_and_a_piped_recording(ray_local, sources, tmp_path):
    out = tmp_path / "kaldi"
    assert _import("kaldi", sources["kaldi"], out, "--targets", "phones") == 1
    assert [(f[1], f[4]) for f in _report(out)] == [
        ("u3", "unsupported_audio_source"), ("u4", "too_few_samples"), ("u5", "bad_segment")]
    table = pq.read_table(out / "lang=es" / "split=train")
    assert table.column("num_samples").to_pylist() == [19200, 22400]  # 1.2 s and 1.4 s at 16 kHz
    assert table.column("speaker").to_pylist() == ["s1", "s2"]
    assert validate_data.main([str(out)]) == 0
    assert _train_ids(out) == ["u1", "u2"]


def test_bad_flags_exit_2_and_bad_input_exit_3(sources, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        import_dataset.main(["--format", "nope", "--input", "x", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        _import("hf", tmp_path / "absent", tmp_path / "o")
    assert e.value.code == 3
    with pytest.raises(SystemExit) as e:  # no language: neither --lang nor a language column
        import_dataset.main(["--format", "hf", "--input", str(sources["hf"]), "--out", str(tmp_path / "o")])
    assert e.value.code == 3
    with pytest.raises(SystemExit) as e:
        _import("hf", sources["hf"], tmp_path / "o", "--text-column", "nope")
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "no text column 'nope'" in err and "train-00000-of-00001.parquet" in err


def test_csv_and_nemo_jsonl_manifests_with_a_language_column(sources, tmp_path):
    clips = sources["manifest"].parent / "clips"
    (tmp_path / "dev.csv").write_text('file,text,lang\n' + "".join(
        f'{clips / f"c{i}.wav"},"{SENTENCES[i]}, dijo",{"es" if i else "fr"}\n' for i in range(2)))
    nemo = [{"audio_filepath": str(clips / f"c{i}.wav"), "text": SENTENCES[i], "duration": 1.0} for i in range(2)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nemo))
    out = tmp_path / "csv"
    assert import_dataset.main(["--format", "manifest", "--input", str(tmp_path / "dev.csv"), "--out", str(out),
                                "--targets", "chars", "--workers", "1", "--no-progress"]) == 0
    assert {lang: set(splits) for lang, splits in read_summary(out)["languages"].items()} \
        == {"es": {"dev"}, "fr": {"dev"}}
    assert pq.read_table(out / "lang=fr").column("phones").to_pylist() == ["h o l a | m u n d o | d i j o"]
    out = tmp_path / "nemo"
    assert _import("manifest", tmp_path / "m.jsonl", out, "--split", "test") == 0
    table = pq.read_table(out / "lang=es" / "split=test")
    assert table.column("text").to_pylist() == SENTENCES[:2] and table.column("phones").null_count == 2


def test_words_unknown_to_the_g2p_are_named(sources, tmp_path, capsys):
    """A word espeak-ng's French voice reads in English fails its row naming the word; digits are imported and
    listed (espeak-ng's number rules may not be what was said); both are in summary.json per language."""
    clips = sources["manifest"].parent / "clips"
    texts = ["bonjour le weekend", "en 1999 il pleut", "le chat dort", "un weekend de 1999"]
    (tmp_path / "fr.tsv").write_text("path\tsentence\n" + "".join(
        f"{clips / f'c{i}.wav'}\t{t}\n" for i, t in enumerate(texts)))
    out = tmp_path / "fr"
    assert import_dataset.main(["--format", "manifest", "--input", str(tmp_path / "fr.tsv"), "--out", str(out),
                                "--lang", "fr", "--targets", "phones", "--workers", "1", "--no-progress"]) == 1
    failed = {row[1]: row for row in _report(out)}
    assert set(failed) == {"c0", "c3"}
    assert failed["c0"][4] == "language_switch" and "'weekend'" in failed["c0"][5]
    words = {(w["word"], w["why"]): w["rows"] for w in read_summary(out)["unknown_words"]["fr"]}
    assert words == {("weekend", "language_switch"): 2, ("1999", "digits_or_symbols"): 2}
    assert "words unknown to the G2P (fr): 'weekend' x2 (language_switch)" in capsys.readouterr().out
    assert sorted(pq.read_table(out / "lang=fr").column("id").to_pylist()) == ["c1", "c2"]


@pytest.mark.parametrize("fmt", ["hf", "kaldi"])
def test_ray_executor_imports_what_the_process_pool_imports(ray_local, sources, tmp_path, fmt):
    """--executor ray (tasks on the connected Ray; Kaldi's segment recordings read here and shipped) writes the
    same rows, in the same order, and reports the same failures as the local process pool."""
    pool, on_ray = tmp_path / "pool", tmp_path / "ray"
    assert _import(fmt, sources[fmt], pool, "--targets", "phones") == 1
    assert _import(fmt, sources[fmt], on_ray, "--targets", "phones", "--executor", "ray") == 1
    assert _rows(on_ray) == _rows(pool) and _rows(pool)
    assert _report(on_ray) == _report(pool)


def _rows(root: Path) -> list[tuple[str, list[dict]]]:
    return [(str(p.parent.relative_to(root)), pq.read_table(p).to_pylist()) for p in sorted(root.rglob("*.parquet"))]


def test_fifos_devices_and_directories_named_by_a_manifest_fail_their_rows_without_hanging(sources, tmp_path):
    """(Issue 30) Data decides which paths are read: a FIFO (would block forever), /dev/zero (would read until the
    memory runs out) and a directory each fail their own row with a reason; the good rows are imported."""
    import os
    import subprocess
    import sys

    from unispeech_platform.data.audio_file import read_audio_file

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "good.wav").write_bytes(encode(tone(16000, 1.0), 16000, "WAV"))
    os.mkfifo(clips / "pipe.wav")
    (clips / "dir.wav").mkdir()
    manifest = tmp_path / "hostile.tsv"
    manifest.write_text("path\tsentence\n" + "".join(f"{p}\t{s}\n" for p, s in [
        ("clips/good.wav", SENTENCES[0]), ("clips/pipe.wav", SENTENCES[1]), ("/dev/zero", SENTENCES[2]),
        ("clips/dir.wav", SENTENCES[3])]))
    out = tmp_path / "out"
    code = f"from jobs import import_dataset; raise SystemExit(import_dataset.main({['--format', 'manifest', '--input', str(manifest), '--out', str(out), '--lang', 'es', '--workers', '1', '--no-progress']!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=240)  # a hang fails here, not the suite
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]  # 1: some rows not imported
    imported = pq.read_table(next(out.glob("lang=es/split=train/*.parquet")), columns=["id"]).num_rows
    assert imported == 1  # the good row kept
    report = "\n".join("\t".join(r) for r in _report(out))
    assert report.count("not_a_regular_file") == 3, report  # the FIFO, /dev/zero and the directory
    assert "a FIFO" in report and "a character device" in report and "a directory" in report, report
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(OSError, match="2048 bytes > the 1024-byte cap"):
        read_audio_file(big, max_bytes=1024)
