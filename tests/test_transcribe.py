"""jobs.transcribe: a directory with WAV 8 kHz stereo, FLAC, OGG and a corrupt file gives one JSON line per
readable file (the corrupt one is reported, the exit is normal), with token times that increase and lie inside the
audio; beam search agrees with greedy on a peaky model; corpus Parquet rows and the Ray Data actor pool give the
same lines."""

from __future__ import annotations

import itertools
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


# ---- long audio: overlapping windows stitched, never a padded group-norm input ---------------------------------

SENTENCES = [
    "el viento del norte y el sol discutían sobre cuál de ellos era el más fuerte",
    "cuando vieron a un viajero que venía envuelto en una capa muy gruesa",
    "la ciudad despertaba despacio mientras los vendedores abrían sus puestos en la plaza",
    "mi hermana prefiere leer novelas largas durante las noches de invierno",
    "los trenes de la mañana llegan siempre llenos de estudiantes y trabajadores",
]


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> tuple[Path, Path]:
    """A ~90-second FLAC of espeak-ng speech (the five sentences again and again at four speeds, short pauses
    between them) and a random peaky CTC model over its phones."""
    from unispeech_core import PhoneTokenizer
    from unispeech_core.audio import to_mono_16k
    from unispeech_platform.data.espeak import synthesize

    tmp = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    parts, phones, total, i = [], [], 0, 0
    while total < 90 * 16_000:
        wave, rate, ph = synthesize(SENTENCES[i % len(SENTENCES)], "es", speed=140 + 15 * (i % 4))
        parts += [to_mono_16k(wave[None, :], rate), np.zeros(int(rng.uniform(0.1, 0.6) * 16_000), np.float32)]
        phones.append(" ".join(ph))
        total += len(parts[-2]) + len(parts[-1])
        i += 1
    flac = tmp / "ninety_seconds.flac"
    sf.write(flac, np.concatenate(parts), 16_000, format="FLAC")
    return flac, tiny_ctc_model(PhoneTokenizer.from_phones(phones).save(tmp / "vocab.json"), tmp / "model")


def test_windows_cover_every_sample_and_stitching_takes_each_frame_once(tmp_path):
    """Window plans for lengths around the window size: every sample covered, starts on the frame grid, the tail
    absorbed by the last window; stitching windows whose frames are their whole-file indices gives 0..N-1 once."""
    import torch

    from unispeech_core import UniSpeechConfig
    from unispeech_core.feature_encoder import conv_output_lengths
    from unispeech_platform.evaluate.transcribe import (
        TranscribeOptions,
        plan_windows,
        receptive_field,
        stitch,
        window_sizes,
    )

    config, frame = UniSpeechConfig(), 320
    field = receptive_field(config.conv_kernel, config.conv_stride)
    assert field == 400
    opts = TranscribeOptions(model="", out="", inputs=[], chunk_seconds=8)
    assert window_sizes(opts, frame, field) == (128_000, 32_000)  # the default overlap: a quarter of an 8 s window
    assert window_sizes(TranscribeOptions(model="", out="", inputs=[]), frame, field) == (480_000, 80_000)  # 30, 5 s
    none = TranscribeOptions(model="", out="", inputs=[], chunk_seconds=8, chunk_overlap_seconds=0)
    assert window_sizes(none, frame, field) == (128_000, 640)  # "no overlap" still covers a frame's field
    with pytest.raises(ValueError, match="less than half of --chunk-seconds"):
        window_sizes(TranscribeOptions(model="", out="", inputs=[], chunk_seconds=8, chunk_overlap_seconds=4), frame)
    lengths = (1_000, 128_000, 128_001, 224_000 - 1, 224_000, 90 * 16_000 + 1_234, 21 * 16_000 + 17)
    for (window, overlap), n in itertools.product([(128_000, 32_000), (128_000, 640)], lengths):
        plan = plan_windows(n, window, overlap)
        assert plan[0][0] == 0 and plan[-1][1] == n and all(s % frame == 0 for s, _ in plan), (n, plan)
        assert all(b[0] < a[1] for a, b in zip(plan, plan[1:])), plan  # consecutive windows overlap
        assert all(e - s == window for s, e in plan[:-1])
        assert min(n, window) <= plan[-1][1] - plan[-1][0] < 2 * window - overlap, plan  # at most a hop longer
        pieces = [(s, e, torch.arange(s // frame, s // frame + conv_output_lengths(e - s, config))[:, None])
                  for s, e in plan]
        assert torch.equal(stitch(pieces, frame)[:, 0], torch.arange(conv_output_lengths(n, config))), (n, overlap)
    with pytest.raises(ValueError, match="uncovered"):  # windows that only touch: the frame on the cut is lost
        stitch([(s, e, torch.zeros(conv_output_lengths(e - s, config), 1)) for s, e in plan_windows(
            256_000, 128_000, 0)], frame)
    with pytest.raises(SystemExit) as exc:  # an overlap of half a window is a flag error
        jobs.transcribe.main(["--model", "m", "--out", str(tmp_path / "o.jsonl"), "--chunk-seconds", "8",
                              "--chunk-overlap-seconds", "4", "x.wav"])
    assert exc.value.code == 2


def test_a_90_second_recording_in_overlapping_windows_gives_the_whole_file_phones(long_recording, tmp_path):
    """8-second windows overlapping by 3 s (18 windows) against one 93-second forward pass of a model that holds
    it: PER difference <= 1 point (jiwer over the phones; measured 0.29), times inside the file, the tail not
    dropped. The same windows barely overlapping (one frame's receptive field) differ by 4.4 points on this
    random model, whose every frame attends to its whole window: the overlap is what keeps a cut's context."""
    import jiwer

    flac, model = long_recording
    duration = sf.info(flac).duration
    assert 90 <= duration < 100
    rows = {}
    for name, args in {"whole": ["--chunk-seconds", "120"], "windows": ["--chunk-overlap-seconds", "3"],
                       "touching": ["--chunk-overlap-seconds", "0"]}.items():
        out = tmp_path / f"{name}.jsonl"
        chunk = [] if name == "whole" else ["--chunk-seconds", "8"]
        jobs.transcribe.main(["--model", str(model), "--out", str(out), "--ray", "never", "--no-progress", *chunk,
                              *args, str(flac)])
        rows[name] = _lines(out)[flac.name]
    whole, windows = rows["whole"], rows["windows"]
    per = jiwer.wer(whole["text"], windows["text"])
    touching = jiwer.wer(whole["text"], rows["touching"]["text"])
    print(f"{duration:.1f} s recording: {len(whole['tokens'])} phones whole-file, {len(windows['tokens'])} in 8 s "
          f"windows; PER difference {100 * per:.2f} points (3 s overlap), {100 * touching:.2f} (touching windows)")
    assert len(whole["tokens"]) > 300 and per <= 0.01 and touching > 0.02
    _check_times(windows, duration)
    assert windows["tokens"][-1]["end"] > duration - 3  # the last window runs to the end of the file


def test_a_group_norm_model_is_never_given_padding(tmp_path):
    """A group-norm model (configs/base.yaml's feat_extract_norm) with windows of several lengths: the job's
    batching gives each window the logits it gets alone; padding it into a longer window's batch would not."""
    import torch
    from evaluate_helpers import CI_MODEL

    from unispeech_core import PhoneTokenizer, UniSpeechConfig, UniSpeechForCTC
    from unispeech_core.features import normalize, pad_batch
    from unispeech_platform.evaluate.transcribe import TranscribeOptions, Transcriber, Window, plan_windows

    tok = PhoneTokenizer.from_phones(["a b c d e f"])
    torch.manual_seed(0)
    config = {**CI_MODEL, "feat_extract_norm": "group", "do_stable_layer_norm": False}
    UniSpeechForCTC(UniSpeechConfig(**config, vocab_size=len(tok), pad_token_id=tok.pad_token_id)).save_pretrained(
        tmp_path)
    tok.save(tmp_path)
    t = Transcriber(str(tmp_path), TranscribeOptions(model=str(tmp_path), out="", inputs=[], chunk_seconds=2))
    waves = [normalize(_tone(s, 16_000, 1, seed)).numpy() for seed, s in enumerate((5.3, 2.0, 7.1, 1.2, 2.0))]
    windows = [Window(k, s, e) for k, w in enumerate(waves)
               for s, e in plan_windows(len(w), t.window_samples, t.overlap_samples)]
    lengths = sorted({w.end - w.start for w in windows})
    assert len(windows) > t.opts.batch_size and len(lengths) >= 4  # several batches, windows of several lengths
    batched = t.window_logits(waves, windows)
    with torch.inference_mode():
        alone = [t.model(input_values=torch.from_numpy(waves[w.utt][w.start:w.end])[None]).logits[0]
                 for w in windows]
        for w, got, ref in zip(windows, batched, alone):
            assert got.shape == ref.shape and torch.allclose(got, ref, rtol=0, atol=1e-6), (w, (got - ref).abs().max())
        short = min(range(len(windows)), key=lambda i: windows[i].end - windows[i].start)
        longest = max(range(len(windows)), key=lambda i: windows[i].end - windows[i].start)
        pieces = [waves[windows[i].utt][windows[i].start:windows[i].end] for i in (short, longest)]
        padded = t.model(**pad_batch(pieces, do_normalize=False)).logits[0, :len(alone[short])]
    assert (padded - alone[short]).abs().max() > 1e-2  # what padding would have done to the short window
