"""A CTC model as an ONNX graph, and the parity check that decides whether the graph is kept.

The graph: ``waveform`` float32 [batch, samples] (16 kHz mono, as decoded and resampled by the platform; each row
normalised inside the graph to zero mean and unit variance, as ``features.pad_batch`` does) -> ``logits`` float32
[batch, frames, vocab]; batch and samples (so frames) are dynamic axes. Rows of one batch have the same length:
the graph takes no attention mask, so pad nothing (or run utterances one by one). Decode the logits with
``vocab.json`` beside the graph (greedy: argmax per frame, collapse repeats, drop ``<pad>``, the CTC blank).

Exporter: TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The default exporter of torch >= 2.9
(``dynamo=True``, torch.export) needs ``onnxscript`` (and its ``onnx-ir``) besides ``onnx``; the TorchScript
exporter is part of torch, needs only ``onnx`` (to read back the graph it wrote) and works offline, and its trace
of the feature encoder's length arithmetic stays symbolic for the dynamic axes (checked by the parity run on a
second length and batch size). Graphs are written in one file (no external data): up to 2 GiB of weights,
UniSpeech-large in fp32 is 1.3 GB.

Parity: onnxruntime (CPU) against the PyTorch model on the same audio, decoded from files (FLAC, WAV, ...)
through the platform's decode path (``data.audio``: soundfile, downmix, resample to 16 kHz): the model's own
input path (``pad_batch``, unpadded) on the PyTorch side, the raw waveform on the ONNX side; also a batch of two
rows of another length. The largest absolute logit difference must be at most ``PARITY_TOLERANCE``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unispeech_platform.runtime.errors import JobSetupError

ONNX_NAME = "model.onnx"
INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"
OPSET = 17
PARITY_TOLERANCE = 1e-4
"""Largest absolute logit difference (fp32) between onnxruntime and PyTorch for the graph to be kept."""
BUILTIN_SECONDS = 1.5
MIN_PARITY_SECONDS, MAX_PARITY_SECONDS = 0.1, 30.0
"""A parity clip is at least this long (shorter: refused), and only its first 30 s are compared."""
"""The built-in parity clip (when no --audio is given): a 44.1 kHz stereo FLAC decoded like a user's file."""


class OnnxUnavailableError(JobSetupError):
    """onnx / onnxruntime are not installed (the ``[onnx]`` extra)."""


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    clips: int
    """Waveforms compared one by one (the batch of two comes on top)."""

    def ok(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= tolerance


def _wrapped(model):
    """The CTC model with the normalisation of ``pad_batch`` in front and only the logits out."""
    import torch

    class WaveformToLogits(torch.nn.Module):
        def __init__(self, ctc):
            super().__init__()
            self.ctc = ctc

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            x = waveform.to(torch.float64)
            mean = x.mean(dim=-1, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
            normed = ((x - mean) / torch.sqrt(var + 1e-7)).to(torch.float32)
            return self.ctc(normed).logits

    return WaveformToLogits(model).eval()


def export_onnx(model_dir: str | Path, out_file: Path) -> None:
    """Write the fp32 CTC model of ``model_dir`` to ``out_file`` (a path the job claimed)."""
    import importlib.util
    import warnings

    import torch

    if importlib.util.find_spec("onnx") is None:
        raise OnnxUnavailableError("onnx is not installed: pip install 'unispeech-platform[onnx]'")

    from unispeech_core import UniSpeechForCTC

    model = UniSpeechForCTC.from_pretrained(str(model_dir)).float().eval()
    example = torch.randn(1, max(model.config.receptive_field * 4, 16_000))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            _wrapped(model), (example,), str(out_file), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch", 1: "frames"}},
        )


def builtin_clip() -> bytes:
    """FLAC bytes of a 1.5 s 44.1 kHz stereo signal (a chirp, a tone and noise): a real file format, with a
    downmix and a resampling to do, when the user gives no audio of their own."""
    import soundfile as sf

    rate = 44_100
    t = np.arange(int(BUILTIN_SECONDS * rate)) / rate
    rng = np.random.default_rng(0)
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)
    left = chirp + 0.05 * rng.standard_normal(t.size)
    right = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1).clip(-1, 1), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decoded_clip(data: bytes, where: str) -> np.ndarray:
    """16 kHz mono float32 of audio file bytes, through the platform's decode path (ValueError naming ``where``)."""
    from unispeech_platform.data.audio import decode_audio, to_mono_16k

    decoded = decode_audio(data, None, None)
    if decoded.error is not None:
        raise ValueError(f"{where}: {decoded.error}: {decoded.detail}")
    return to_mono_16k(decoded.wave, decoded.sample_rate)


def _session(onnx_file: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxUnavailableError("onnxruntime is not installed: pip install 'unispeech-platform[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def check_parity(model_dir: str | Path, onnx_file: Path, clips: list[np.ndarray]) -> Parity:
    """Largest absolute logit difference between onnxruntime on ``onnx_file`` and the PyTorch model on each clip
    (PyTorch through pad_batch, as transcription feeds it), and on a batch of two rows of another length."""
    import torch

    from unispeech_core import UniSpeechForCTC, pad_batch

    model = UniSpeechForCTC.from_pretrained(str(model_dir)).float().eval()
    session = _session(onnx_file)
    worst = 0.0
    with torch.inference_mode():
        for wave in clips:
            ref = model(**pad_batch([wave])).logits.numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: wave[None].astype(np.float32)})[0]
            worst = max(worst, _diff(ref, got))
        half = clips[0][: max(len(clips[0]) // 2, model.config.receptive_field)]
        pair = [half, half[::-1].copy()]
        ref = model(**pad_batch(pair)).logits.numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: np.stack(pair).astype(np.float32)})[0]
        worst = max(worst, _diff(ref, got))
    return Parity(worst, len(clips))


def _diff(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape:
        return float("inf")  # a length the trace froze: the dynamic axes do not hold
    return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
