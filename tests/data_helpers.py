"""Builders shared by the data tests: tones in every container, a corpus of bad and odd rows (their local Ray is
train_helpers.local_ray, like every other test's)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.data import audio as A
from unispeech_platform.data.decode import EMPTY_PHONES
from unispeech_platform.data.schema import SCHEMA, partition_dir

os.environ.setdefault("RAY_AUTH_MODE", "token")  # ~/.ray/auth_token may exist: be explicit (docs/architecture.md#ray-token-auth-and-security)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PHONES = "a b c d"


def tone(rate: int, seconds: float, *, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """[samples, channels] sine; the second channel (if any) at half amplitude, so downmixing matters."""
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1.0 if c == 0 else 0.5) for c in range(channels)], axis=1).astype(np.float32)


def encode(wave: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def frames(data: bytes) -> int:
    """What libsndfile decodes (MP3/OGG declare their length only approximately)."""
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0].shape[0]


def row(rid: str, audio: bytes | None, rate: int | None, n: int | None, phones: str | None = PHONES) -> dict:
    return {
        "id": rid,
        "audio": audio,
        "sample_rate": rate,
        "num_samples": n,
        "speaker": "spk",
        "text": None,
        "phones": phones,
    }


def good_rows(prefix: str, count: int, *, seconds: float = 1.0) -> list[dict]:
    rows = []
    for i in range(count):
        secs = seconds + 0.25 * (i % 4)
        data = encode(tone(16000, secs, freq=300 + 20 * i), 16000, "FLAC")
        rows.append(row(f"{prefix}-good-{i:03d}", data, 16000, int(16000 * secs)))
    return rows


def odd_rows() -> list[dict]:
    """Valid but unusual: 8 kHz stereo WAV, 44.1 kHz FLAC, 48 kHz OGG, 22.05 kHz MP3, unlabeled."""
    wav8 = encode(tone(8000, 1.0, channels=2), 8000, "WAV", "PCM_16")
    flac44 = encode(tone(44100, 1.0), 44100, "FLAC")
    ogg48 = encode(tone(48000, 1.0, channels=2), 48000, "OGG", "VORBIS")
    mp3 = encode(tone(22050, 1.0), 22050, "MP3")
    return [
        row("odd-wav-8k-stereo", wav8, 8000, 8000),
        row("odd-flac-44k", flac44, 44100, 44100),
        row("odd-ogg-48k-stereo", ogg48, 48000, frames(ogg48)),
        row("odd-mp3-22k", mp3, 22050, frames(mp3)),
        row("odd-unlabeled", encode(tone(16000, 1.0), 16000, "FLAC"), 16000, 16000, phones=None),
    ]


def bad_rows() -> tuple[list[dict], dict[str, str]]:
    """One row per way a row can be bad, and the reason each must be reported with."""
    flac = encode(tone(16000, 1.0), 16000, "FLAC")
    wav = encode(tone(16000, 1.0), 16000, "WAV", "PCM_16")
    nan = tone(16000, 1.0)
    nan[100] = np.nan
    inf = tone(16000, 1.0)
    inf[5] = np.inf
    rng = np.random.default_rng(0)
    rows = [
        (row("bad-undecodable", rng.bytes(3000), 16000, 16000), A.UNDECODABLE),
        (row("bad-truncated-flac", flac[: len(flac) // 2], 16000, 16000), A.TRUNCATED),
        (row("bad-truncated-wav", wav[: len(wav) // 2], 16000, 16000), A.TRUNCATED),
        (row("bad-empty-bytes", b"", 16000, 16000), A.EMPTY_AUDIO),
        (row("bad-null-audio", None, 16000, 16000), A.NULL_AUDIO),
        (
            row("bad-zero-samples", encode(np.zeros((0, 1), np.float32), 16000, "WAV"), 16000, 0),
            A.TOO_FEW_SAMPLES,
        ),
        (
            row("bad-300-samples", encode(tone(16000, 300 / 16000), 16000, "FLAC"), 16000, 300),
            A.TOO_FEW_SAMPLES,
        ),
        (row("bad-nan", encode(nan, 16000, "WAV", "FLOAT"), 16000, 16000), A.NON_FINITE),
        (row("bad-inf", encode(inf, 16000, "WAV", "FLOAT"), 16000, 16000), A.NON_FINITE),
        (row("bad-unknown-phones", flac, 16000, 16000, phones="a zz b"), A.UNKNOWN_PHONES),
        (row("bad-empty-phones", flac, 16000, 16000, phones="  "), EMPTY_PHONES),
        (row("bad-declared-rate", flac, 22050, 16000), A.SAMPLE_RATE_MISMATCH),
        (row("bad-declared-samples", flac, 16000, 17000), A.NUM_SAMPLES_MISMATCH),
    ]
    return [r for r, _ in rows], {r["id"]: reason for r, reason in rows}


def write_part(root: Path, lang: str, split: str, rows: list[dict], index: int = 0) -> Path:
    d = partition_dir(root, lang, split)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"part-{index:05d}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path, row_group_size=8)
    return path


def build_messy_corpus(root: Path) -> tuple[dict[str, str], set[str]]:
    """es/train: good + odd + every bad kind; ru/train: good rows; es/dev: good rows.

    Returns (bad id -> expected reason, ids of the valid es+ru train rows).
    """
    bad, reasons = bad_rows()
    es_train = good_rows("es", 12) + odd_rows()
    ru_train = good_rows("ru", 6, seconds=2.0)
    write_part(root, "es", "train", es_train[:9] + bad[:6])
    write_part(root, "es", "train", es_train[9:] + bad[6:], index=1)
    write_part(root, "ru", "train", ru_train)
    write_part(root, "es", "dev", good_rows("es-dev", 4))
    PhoneTokenizer.from_phones([PHONES]).save(root)
    return reasons, {r["id"] for r in es_train + ru_train}


def peak_hz(wave: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))
