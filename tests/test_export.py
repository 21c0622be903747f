"""Models out (issue 32): `python -m jobs.export` writes a CTC model as an ONNX graph whose onnxruntime logits match
PyTorch's within 1e-4 (fp32) on a real FLAC file, or as a transformers-format directory; an export that misses the
tolerance, or whose --out may not be written, leaves nothing behind (docs/export.md). In-process, no Ray: one tiny
model made offline from a config and one ONNX export shared by the module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from parity_utils import TINY

import unispeech_core as uc
from jobs import export as export_job
from unispeech_platform.runtime.output_paths import MARKER

ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (make setup installs it)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CTC model directory (config.json, model.safetensors, vocab.json) and a 22.05 kHz stereo FLAC."""
    root = tmp_path_factory.mktemp("export")
    tokenizer = uc.PhoneTokenizer.from_phones(["a", "b", "t͡ʃ", "ə", "ʃ", "ŋ"])
    torch.manual_seed(0)
    model = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, "vocab_size": len(tokenizer)}))
    model.save_pretrained(str(root / "model"))
    tokenizer.save(root / "model" / "vocab.json")
    rng = np.random.default_rng(3)
    t = np.arange(int(22_050 * 1.3)) / 22_050
    wave = np.stack([0.4 * np.sin(2 * np.pi * 220 * t), 0.1 * rng.standard_normal(t.size)], axis=1)
    sf.write(root / "speech.flac", wave, 22_050, format="FLAC", subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def onnx_out(tiny):
    """One ONNX export of the tiny model, parity-checked on the FLAC (what the job printed, and its result)."""
    out = tiny / "onnx"
    result = export_job.main(["--model", str(tiny / "model"), "--format", "onnx", "--out", str(out),
                              "--audio", str(tiny / "speech.flac")])
    return out, result


def test_onnx_export_matches_pytorch_on_a_flac(tiny, onnx_out):
    from unispeech_platform.data.audio import decode_audio, to_mono_16k

    out, result = onnx_out
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "model.onnx", "config.json", "vocab.json"])
    assert json.loads((out / "vocab.json").read_text()) == json.loads((tiny / "model" / "vocab.json").read_text())
    # independently of the job's own check: the FLAC through the platform's decode path, both runtimes
    decoded = decode_audio((tiny / "speech.flac").read_bytes(), None, None)
    wave = to_mono_16k(decoded.wave, decoded.sample_rate)
    model = uc.UniSpeechForCTC.from_pretrained(str(tiny / "model")).eval()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in ([wave], [wave[:9000], wave[-9000:]]):  # dynamic batch and length axes
        with torch.inference_mode():
            ref = model(**uc.pad_batch(batch)).logits.numpy()
        got = session.run(["logits"], {"waveform": np.stack(batch).astype(np.float32)})[0]
        assert got.shape == ref.shape
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4, diff
        print(f"ONNX vs PyTorch, batch {len(batch)} x {len(batch[0])} samples: max abs logit diff {diff:.3g}")


def test_an_export_that_misses_the_tolerance_leaves_nothing(tiny, monkeypatch, capsys):
    from unispeech_platform.export import onnx_model

    monkeypatch.setattr(onnx_model, "PARITY_TOLERANCE", -1.0)  # no graph can pass
    out = tiny / "refused"
    with pytest.raises(SystemExit) as done:
        export_job.main(["--model", str(tiny / "model"), "--format", "onnx", "--out", str(out)])
    assert done.value.code == 3
    err = capsys.readouterr().err
    assert "refused: max abs logit diff" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # the --out it created is gone


def test_hf_export_is_the_model_directory_and_replaces_an_earlier_export(tiny, onnx_out):
    import shutil

    out = tiny / "hf"
    shutil.copytree(onnx_out[0], out)  # an earlier ONNX export, marker included
    (out / "notes.txt").write_text("mine")  # a user's file beside the export stays
    export_job.main(["--model", str(tiny / "model"), "--format", "hf", "--out", str(out)])
    for name in ("config.json", "model.safetensors", "vocab.json"):
        assert (out / name).read_bytes() == (tiny / "model" / name).read_bytes()
    names = {p.name for p in out.iterdir()}
    assert names == {MARKER, "model.safetensors", "config.json", "vocab.json", "notes.txt"}  # the graph went
    assert sorted(json.loads((out / MARKER).read_text())["made"]) == ["config.json", "model.safetensors", "vocab.json"]


@pytest.mark.parametrize("case", ["a file", "a foreign directory", "inside the model"])
def test_export_refuses_a_bad_out(tiny, tmp_path, case, capsys):
    if case == "a file":
        out = tmp_path / "out"
        out.write_text("keep")
    elif case == "a foreign directory":
        out = tmp_path / "out"
        out.mkdir()
        (out / "data.csv").write_text("keep")
    else:
        out = tiny / "model" / "exported"
    before = sorted(p.name for p in out.parent.iterdir())
    with pytest.raises(SystemExit) as done:
        export_job.main(["--model", str(tiny / "model"), "--format", "hf", "--out", str(out)])
    assert done.value.code == 3, case
    assert "setup error: " in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == before  # nothing written, nothing removed
    if out.is_file():
        assert out.read_text() == "keep"
    elif out.is_dir():
        assert [p.name for p in out.iterdir()] == ["data.csv"]
