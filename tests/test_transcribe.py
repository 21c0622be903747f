"""jobs.transcribe: a directory with WAV 8 kHz stereo, FLAC, OGG and a corrupt file gives one JSON line per
readable file (the corrupt one is reported, the exit is normal), with token times that increase and lie inside the
audio; beam search agrees with greedy on a peaky model; corpus Parquet rows and the Ray Data actor pool give the
same lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from evaluate_helpers import tiny_ctc_model
from train_helpers import local_ray

import jobs.transcribe

DURATIONS = {"a/eight_k_stereo.wav": 1.5, "b/deep/sixteen_k.flac": 2.0, "c.ogg": 1.2}


def _tone(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(t.size)
    return np.stack([mono, mono[::-1]], 1) if channels == 2 else mono


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from unispeech_core import PhoneTokenizer

    tmp = tmp_path_factory.mktemp("model")
    return tiny_ctc_model(PhoneTokenizer.from_phones(["a b c d e f"]).save(tmp / "vocab.json"), tmp / "model")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for name in DURATIONS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    sf.write(root / "a/eight_k_stereo.wav", _tone(1.5, 8000, 2, 0), 8000, subtype="PCM_16")
    sf.write(root / "b/deep/sixteen_k.flac", _tone(2.0, 16000, 1, 1), 16000, format="FLAC")
    sf.write(root / "c.ogg", _tone(1.2, 22050, 1, 2), 22050, format="OGG", subtype="VORBIS")
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(200))
    (root / "notes.txt").write_text("not audio: skipped by extension, never reported")
    return root


def _lines(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name + (f"#{r['id']}" if "id" in r else ""): r
            for r in map(json.loads, path.read_text().splitlines())}


def _check_times(row: dict, duration: float) -> None:
    assert row["tokens"], row
    starts = [t["start"] for t in row["tokens"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # strictly increasing
    for t in row["tokens"]:
        assert 0 <= t["start"] < t["end"] <= duration + 1e-6, (t, duration)
    assert row["text"] == " ".join(t["token"] for t in row["tokens"])  # a phone model: text = its phones


def test_directory_with_mixed_formats_and_a_corrupt_file(model_dir, audio_dir, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    summary = jobs.transcribe.main(["--model", str(model_dir), "--out", str(out), "--ray", "never", str(audio_dir)])
    rows = _lines(out)
    assert set(rows) == {Path(n).name for n in DURATIONS}
    for name, seconds in DURATIONS.items():
        row = rows[Path(name).name]
        assert row["duration"] == pytest.approx(seconds, abs=1e-3)  # resampled to 16 kHz, length kept
        _check_times(row, seconds)
    assert summary.transcribed == 3 and not summary.used_ray
    assert [Path(f.where).name for f in summary.failures] == ["corrupt.wav"]
    captured = capsys.readouterr()
    assert "failed: " in captured.err and "corrupt.wav" in captured.err and "notes.txt" not in captured.err
    assert "3 utterances" in captured.out

    # chunked windows: times are offset back into the file and still increase inside it
    chunked = tmp_path / "chunked.jsonl"
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(chunked), "--ray", "never", "--chunk-seconds", "1",
                          str(audio_dir / "b/deep/sixteen_k.flac")])
    row = _lines(chunked)["sixteen_k.flac"]
    _check_times(row, 2.0)
    assert max(t["start"] for t in row["tokens"]) > 1.0  # tokens from the second window


def test_beam_search_agrees_with_greedy_on_a_peaky_model(model_dir, audio_dir, tmp_path):
    greedy, beam = tmp_path / "greedy.jsonl", tmp_path / "beam.jsonl"
    flac = str(audio_dir / "b/deep/sixteen_k.flac")
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(greedy), "--ray", "never", flac])
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(beam), "--ray", "never", "--decoder", "beam",
                          "--beam-size", "8", flac])
    g, b = _lines(greedy)["sixteen_k.flac"], _lines(beam)["sixteen_k.flac"]
    assert b["text"] == g["text"]
    _check_times(b, 2.0)
    for tb, tg in zip(b["tokens"], g["tokens"]):  # beam's frame lies inside greedy's run of the same token
        assert tg["start"] <= tb["start"] < tb["end"] <= tg["end"] + 1e-6


def test_corpus_rows_and_unreadable_inputs(model_dir, tmp_path, capsys):
    import io

    def flac(seconds: float) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, _tone(seconds, 16000, 1, 3), 16000, format="FLAC")
        return buf.getvalue()

    part = tmp_path / "corpus" / "lang=es" / "split=test" / "part-00000.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["u1", "u2", "u3"], "audio": [flac(1.0), b"garbage", flac(1.4)],
                             "sample_rate": pa.array([16000] * 3, pa.int32())}), part)
    out = tmp_path / "corpus.jsonl"
    summary = jobs.transcribe.main(["--model", str(model_dir), "--out", str(out), "--ray", "never",
                                    str(tmp_path / "corpus")])
    rows = _lines(out)
    assert set(rows) == {"part-00000.parquet#u1", "part-00000.parquet#u3"}
    _check_times(rows["part-00000.parquet#u3"], 1.4)
    assert [f.where.endswith("#u2") for f in summary.failures] == [True]

    (tmp_path / "bad.flac").write_bytes(b"fLaC" + bytes(64))
    with pytest.raises(SystemExit) as exc:  # nothing readable at all: a setup error, one line
        jobs.transcribe.main(["--model", str(model_dir), "--out", str(tmp_path / "none.jsonl"), "--ray", "never",
                              str(tmp_path / "bad.flac"), str(tmp_path / "missing/*.wav")])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "nothing transcribed" in err and "Traceback" not in err


@pytest.mark.slow
def test_ray_actor_pool_gives_the_same_lines(model_dir, audio_dir, tmp_path):
    local, pooled = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(local), "--ray", "never", str(audio_dir)])
    with local_ray():  # a private Ray, never one left running here
        summary = jobs.transcribe.main(["--model", str(model_dir), "--out", str(pooled), "--ray", "always",
                                        "--batch-size", "2", str(audio_dir)])
    assert summary.used_ray and [Path(f.where).name for f in summary.failures] == ["corrupt.wav"]
    expected, got = _lines(local), _lines(pooled)
    assert set(got) == set(expected)
    for name, row in expected.items():
        assert got[name]["text"] == row["text"]
        assert [t["start"] for t in got[name]["tokens"]] == pytest.approx([t["start"] for t in row["tokens"]])


def _arpa(path: Path, favoured: str, tokens: list[str]) -> Path:
    """A bigram KenLM ARPA over the model's tokens where every token but ``favoured`` is all but impossible."""
    uni = [("<unk>", -99.0), ("<s>", -99.0), ("</s>", -1.0), *((t, -0.1 if t == favoured else -99.0) for t in tokens)]
    lines = ["", "\\data\\", f"ngram 1={len(uni)}", "ngram 2=1", "", "\\1-grams:"]
    lines += [f"{p}\t{t}\t-0.3" if t in ("<s>", favoured) else f"{p}\t{t}\t0" for t, p in uni]
    lines += ["", "\\2-grams:", f"-0.1\t<s> {favoured}", "", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


def test_beam_search_with_a_token_lm(model_dir, audio_dir, tmp_path, capsys):
    from collections import Counter

    flac = str(audio_dir / "b/deep/sixteen_k.flac")
    greedy, fused = tmp_path / "greedy.jsonl", tmp_path / "lm.jsonl"
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(greedy), "--ray", "never", flac])
    g = _lines(greedy)["sixteen_k.flac"]["text"].split()
    assert len(set(g)) > 1  # the model alone says several phones ...
    favoured = Counter(g).most_common(1)[0][0]
    lm = _arpa(tmp_path / "lm.arpa", favoured, list("abcdef"))
    jobs.transcribe.main(["--model", str(model_dir), "--out", str(fused), "--ray", "never", "--decoder", "beam",
                          "--lm", str(lm), "--lm-weight", "5", flac])
    f = _lines(fused)["sixteen_k.flac"]
    assert set(f["text"].split()) == {favoured}  # ... the LM lets only its favourite through
    _check_times(f, 2.0)

    unigram = tmp_path / "unigram.arpa"  # KenLM refuses unigram-only models: a setup error naming the file
    unigram.write_text("\n\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\t0\n-1\t</s>\t0\n\n\\end\\\n")
    out = tmp_path / "bad.jsonl"
    with pytest.raises(SystemExit) as exc:
        jobs.transcribe.main(["--model", str(model_dir), "--out", str(out), "--ray", "never", "--decoder", "beam",
                              "--lm", str(unigram), flac])
    assert exc.value.code == 3 and str(unigram) in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_greedy_spans_are_the_greedy_ids_with_their_frame_runs():
    import torch

    from unispeech_core import ctc_greedy_ids
    from unispeech_core.decoding import ctc_greedy_spans, frame_seconds

    torch.manual_seed(0)
    logits = torch.randn(3, 40, 6) * 3
    lengths = torch.tensor([40, 25, 7])
    for row, spans, ids, n in zip(logits.argmax(-1), ctc_greedy_spans(logits, lengths), ctc_greedy_ids(logits, lengths),
                                  lengths.tolist()):
        assert [s.id for s in spans] == ids and ids
        assert all((row[s.start:s.end] == s.id).all() for s in spans)  # a span is a run of its token's argmax
        assert all(0 <= s.start < s.end <= n for s in spans)
        assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert frame_seconds((5, 2, 2, 2, 2, 2, 2)) == 0.02
