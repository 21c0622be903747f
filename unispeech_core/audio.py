"""Decode, check and resample one utterance; every way a row can be bad has a fixed reason code.

The same :func:`decode_audio` serves the validator, the training pipeline, transcription and the served MLflow
model (unispeech_platform/tracking/phone_model.py, which ships this package as its code), so "bad" means one thing
everywhere. Errors are returned, never raised: one broken file must not stop a job. The platform imports it as
``unispeech_platform.data.audio``.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

TARGET_SAMPLE_RATE = 16_000
MIN_SAMPLES = 400  # the model's conv receptive field at 16 kHz: anything shorter yields no frame

# Reasons a row is bad (reported by validate_data, dropped and counted by the pipeline).
NULL_AUDIO = "null_audio"
EMPTY_AUDIO = "empty_audio"
UNDECODABLE = "undecodable"
TRUNCATED = "truncated"
TOO_FEW_SAMPLES = "too_few_samples"
NON_FINITE = "non_finite_samples"
SAMPLE_RATE_MISMATCH = "sample_rate_mismatch"
NUM_SAMPLES_MISMATCH = "num_samples_mismatch"
UNKNOWN_PHONES = "unknown_phones"
BAD_REASONS = (
    NULL_AUDIO,
    EMPTY_AUDIO,
    UNDECODABLE,
    TRUNCATED,
    TOO_FEW_SAMPLES,
    NON_FINITE,
    SAMPLE_RATE_MISMATCH,
    NUM_SAMPLES_MISMATCH,
    UNKNOWN_PHONES,
)


@dataclass
class Decoded:
    """A checked utterance: ``wave`` is float32 [channels, samples] at ``sample_rate``, or an error."""

    wave: np.ndarray | None
    sample_rate: int
    error: str | None = None
    detail: str = ""


def _fail(reason: str, detail: str, sample_rate: int = 0) -> Decoded:
    return Decoded(None, sample_rate, reason, detail)


UNKNOWN_LENGTH = 2**63 - 1
"""libsndfile's frame count of a stream whose header gives no length (a FLAC written to a pipe: STREAMINFO's total
samples 0, as ``ffmpeg ... -f flac pipe:1`` or libsndfile on a pipe leave it): not a length, decode to the end."""
STREAM_BLOCK = 1 << 16
"""Frames per read of a stream of unknown length (the whole clip is never allocated up front)."""
_DATA_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_PLACEHOLDER_SIZE = 0x7FFFF000
"""A data-chunk size at or above this is a streaming writer's placeholder (ffmpeg 0xFFFFFFFF, sox 0x7FFFF000), not a
length: such a WAV is decoded to its end."""


def short_body(log: str) -> str | None:
    """Why a WAV/AIFF body is shorter than its header says, from libsndfile's own log of the header
    (``data : 64000 (should be 31960)``), or None. libsndfile clamps its frame count to the bytes present, so the
    frame count alone cannot tell a cut file from a short one; its log can."""
    for m in _DATA_CHUNK.finditer(log):
        declared, present = int(m[2]), int(m[3])
        if present < declared < _PLACEHOLDER_SIZE:
            return f"header promises a {declared}-byte {m[1]} chunk, the file holds {present} bytes"
    return None


def frames_in_header(f: sf.SoundFile) -> int | None:
    """Samples per channel as the open file's header states them; None when the header gives no length."""
    return None if f.frames >= UNKNOWN_LENGTH else f.frames


def read_stream(f: sf.SoundFile) -> np.ndarray:
    """Every frame of a stream of unknown length, [frames, channels] float32, read block by block until the decoder
    stops (never one allocation of the 2^63-frame "length").

    libsndfile raises at such a stream's end instead of returning a short read ("psf_fseek() failed" at a clean end;
    "lost sync" where its own pipe writer appended the header update it could not seek back to) and may lose its
    position (``tell`` -1). So each block is read into a buffer of NaN, a value no FLAC or Vorbis decoder produces:
    the frames it wrote are the rows before the first row left NaN."""
    blocks = []
    while True:
        out = np.full((STREAM_BLOCK, f.channels), np.nan, dtype=np.float32)
        try:
            n = len(f.read(STREAM_BLOCK, dtype="float32", always_2d=True, out=out))
        except Exception:  # the stream's end as libsndfile reports it
            untouched = np.isnan(out).all(axis=1)
            n = int(np.argmax(untouched)) if untouched.any() else STREAM_BLOCK
            blocks.append(out[:n])
            break
        blocks.append(out[:n])
        if n < STREAM_BLOCK:
            break
    return np.concatenate(blocks)


def decode_audio(audio: bytes | None, declared_rate: int | None, declared_samples: int | None) -> Decoded:
    """Decode encoded bytes with libsndfile and check them against the row's declared metadata."""
    if audio is None:
        return _fail(NULL_AUDIO, "audio is null")
    if len(audio) == 0:
        return _fail(EMPTY_AUDIO, "audio has 0 bytes")
    try:
        f = sf.SoundFile(io.BytesIO(audio))
    except Exception as e:  # libsndfile cannot open it: not audio, or a header it does not know
        return _fail(UNDECODABLE, str(e).replace("<_io.BytesIO object", "<bytes").split(" at 0x")[0])
    with f:
        rate, header_frames, fmt = f.samplerate, frames_in_header(f), f.format
        cut = short_body(f.extra_info)
        if cut:  # a WAV/AIFF cut short: libsndfile would decode what is there as if it were the whole clip
            return _fail(TRUNCATED, cut, rate)
        try:
            wave = (f.read(dtype="float32", always_2d=True) if header_frames is not None else read_stream(f)).T
        except Exception as e:  # opened but broke mid-stream, e.g. "flac decoder lost sync"
            return _fail(TRUNCATED, f"decoding stopped: {e}", rate)
    n = wave.shape[1]
    if header_frames is not None and 0 < n < header_frames and fmt != "MP3":  # MP3 headers only estimate it
        return _fail(TRUNCATED, f"header promises {header_frames} samples, only {n} decode", rate)
    if declared_rate is not None and declared_rate != rate:
        return _fail(SAMPLE_RATE_MISMATCH, f"row declares {declared_rate} Hz, file is {rate} Hz", rate)
    if declared_samples is not None and declared_samples != n:
        hint = " (truncated?)" if n < declared_samples else ""
        return _fail(
            NUM_SAMPLES_MISMATCH, f"row declares {declared_samples} samples, file has {n}{hint}", rate
        )
    if round(n * TARGET_SAMPLE_RATE / rate) < MIN_SAMPLES:
        return _fail(TOO_FEW_SAMPLES, f"{n} samples at {rate} Hz < {MIN_SAMPLES} at 16 kHz", rate)
    if not np.isfinite(wave).all():
        return _fail(NON_FINITE, f"{int((~np.isfinite(wave)).sum())} NaN/inf samples", rate)
    return Decoded(wave, rate)


@functools.cache
def _resampler(orig: int, new: int):
    """torchaudio's windowed-sinc resampler for one rate pair, its kernel built once per process.

    ``torchaudio.functional.resample`` rebuilds the kernel on every call (~35 ms for 22,050 -> 16,000 Hz,
    more than decoding the clip); ``transforms.Resample`` runs the same algorithm with the kernel cached.
    Imported lazily: decode workers for 16 kHz corpora never pay torch's import time.
    """
    import torchaudio.transforms

    return torchaudio.transforms.Resample(orig, new)


def to_mono_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix [channels, samples] to mono and resample to 16 kHz."""
    mono = wave.mean(axis=0) if wave.shape[0] > 1 else wave[0]
    if sample_rate == TARGET_SAMPLE_RATE:
        return np.ascontiguousarray(mono, dtype=np.float32)
    import torch

    with torch.no_grad():
        out = _resampler(sample_rate, TARGET_SAMPLE_RATE)(torch.from_numpy(np.ascontiguousarray(mono)))
    return out.numpy()


def encode_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC bytes of a mono float waveform in [-1, 1] (clipped): lossless for our synthetic audio."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
