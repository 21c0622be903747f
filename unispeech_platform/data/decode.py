"""The decode stage: corpus rows in, 16 kHz mono float32 rows (or a reason they are unusable) out.

It runs inside Ray Data tasks (``map_batches``) and in the local path alike. A bad row is not dropped
here: it leaves with an empty ``wave`` and its ``error``, so the worker that receives it can count it.
Length filters use the declared ``num_samples`` first, so rows that are too long are never decoded; a row
without one (a part written without the column) is judged by its audio file's header.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import soundfile as sf

from .audio import BAD_REASONS, UNKNOWN_PHONES, decode_audio, frames_in_header, to_mono_16k
from .row_groups import read_or_raise
from .schema import READ_SCHEMA, TARGET_SAMPLE_RATE, PartFile
from .storage import is_uri, locate

EMPTY_PHONES = "empty_phones"
SHORTER_THAN_MIN = "shorter_than_min_duration"
LONGER_THAN_MAX = "longer_than_max_duration"
ROW_BAD_REASONS = (*BAD_REASONS, EMPTY_PHONES)
FILTER_REASONS = (SHORTER_THAN_MIN, LONGER_THAN_MAX)
DROP_REASONS = (*ROW_BAD_REASONS, *FILTER_REASONS)  # fixed order: workers all-reduce counts by index

READ_COLUMNS = ["id", "audio", "sample_rate", "num_samples", "phones", "lang"]
DECODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("lang", pa.string()),
        ("wave", pa.binary()),  # float32 little-endian samples at 16 kHz, mono
        ("num_samples", pa.int64()),  # of wave
        ("labels", pa.list_(pa.int32())),  # phone ids; null = unlabeled
        ("error", pa.string()),  # null = usable row
        ("detail", pa.string()),
        ("rate", pa.float64()),  # language-sampling rate: expected copies per epoch
    ]
)


_EMPTY = np.zeros(0, dtype="<f4")


@dataclass(frozen=True)
class DecodeOptions:
    """What the decode stage needs from the config, small enough to ship with every task."""

    vocab: dict[str, int]
    min_duration_s: float = 0.0
    max_duration_s: float = float("inf")
    rates: dict[str, float] | None = None


def check_phones(phones: str | None, vocab: dict[str, int]) -> tuple[list[int] | None, str | None, str]:
    """Phone ids of a row (None when unlabeled), or the reason they are unusable."""
    if phones is None:
        return None, None, ""
    tokens = phones.split()
    if not tokens:
        return None, EMPTY_PHONES, "phones is an empty string (use null for unlabeled rows)"
    unknown = sorted({p for p in tokens if p not in vocab})
    if unknown:
        return None, UNKNOWN_PHONES, f"not in the vocabulary: {' '.join(unknown)}"
    return [vocab[p] for p in tokens], None, ""


def header_frames(audio: bytes | None) -> int | None:
    """Samples per channel as the encoded file's header states them (MP3: an estimate); None if unreadable or
    unstated (a streamed FLAC). Reads the header only, so it is cheap enough for length filters and hour counts of
    parts without ``num_samples``."""
    if not audio:
        return None
    try:
        with sf.SoundFile(io.BytesIO(audio)) as f:
            return frames_in_header(f)
    except Exception:  # not audio: the decode stage reports it with its reason
        return None


def _decode_row(
    row: dict[str, Any], opts: DecodeOptions
) -> tuple[bytes, int, list[int] | None, str | None, str]:
    rate, n = row["sample_rate"], row["num_samples"]
    # A missing num_samples is not checked against the decoded length (an MP3 header only estimates it).
    length = n if n is not None else header_frames(row["audio"])
    if rate and length is not None:
        seconds = length / rate
        if seconds < opts.min_duration_s:
            return _EMPTY, 0, None, SHORTER_THAN_MIN, f"{seconds:.2f} s < {opts.min_duration_s} s"
        if seconds > opts.max_duration_s:
            return _EMPTY, 0, None, LONGER_THAN_MAX, f"{seconds:.2f} s > {opts.max_duration_s} s"
    labels, error, detail = check_phones(row["phones"], opts.vocab)
    if error:
        return _EMPTY, 0, None, error, detail
    d = decode_audio(row["audio"], rate, n)
    if d.error:
        return _EMPTY, 0, None, d.error, d.detail
    wave = to_mono_16k(d.wave, d.sample_rate)
    if len(wave) > opts.max_duration_s * TARGET_SAMPLE_RATE:  # resampling may add a sample or two
        return _EMPTY, 0, None, LONGER_THAN_MAX, f"{len(wave) / TARGET_SAMPLE_RATE:.2f} s after resampling"
    return wave.astype("<f4", copy=False), len(wave), labels, None, ""


def _binary_array(waves: list[np.ndarray]) -> pa.Array:
    """One Arrow binary array over the concatenated samples: a single copy, no per-row bytes objects."""
    offsets = np.zeros(len(waves) + 1, dtype=np.int64)
    np.cumsum([w.nbytes for w in waves], out=offsets[1:])
    data = np.concatenate(waves) if waves else _EMPTY
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(
            pa.binary(), len(waves), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
        )
    return pa.Array.from_buffers(
        pa.large_binary(), len(waves), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def decode_table(table: pa.Table, opts: DecodeOptions) -> pa.Table:
    """Ray Data ``map_batches`` function (batch_format="pyarrow"): decode every row of ``table``."""
    out: dict[str, list[Any]] = {name: [] for name in DECODED_SCHEMA.names}
    rates = opts.rates or {}
    for row in table.select(READ_COLUMNS).to_pylist():
        wave, n, labels, error, detail = _decode_row(row, opts)
        out["id"].append(row["id"])
        out["lang"].append(row["lang"])
        out["wave"].append(wave)
        out["num_samples"].append(n)
        out["labels"].append(labels)
        out["error"].append(error)
        out["detail"].append(detail)
        out["rate"].append(rates.get(row["lang"], 1.0))
    waves = _binary_array(out.pop("wave"))
    rest = pa.Table.from_pydict(out, schema=DECODED_SCHEMA.remove(DECODED_SCHEMA.get_field_index("wave")))
    return rest.add_column(
        DECODED_SCHEMA.get_field_index("wave"), DECODED_SCHEMA.field("wave").with_type(waves.type), waves
    )


def read_part(part: PartFile) -> pads.Dataset:
    """One part as a pyarrow dataset cast to ``READ_SCHEMA`` (the same casts as the Ray Data read)."""
    return pads.dataset(str(part.path), schema=READ_SCHEMA, format="parquet", filesystem=part.fs)


def read_part_groups(part: PartFile, columns: list[str], groups: list[int] | None = None) -> Iterator[pa.Table]:
    """A part's row groups (all, or ``groups``) with ``columns``, cast like ``read_part``, one table per group; the
    first group that cannot be read raises UnreadableRowGroup naming the file and the group (data/row_groups.py)."""
    fragment = next(iter(read_part(part).get_fragments()))

    def read(g: int) -> pa.Table:
        return fragment.subset(row_group_ids=[g]).to_table(schema=READ_SCHEMA, columns=columns)

    return read_or_raise(fragment.metadata, str(part.location), read, groups)


def read_columns(part: PartFile, columns: list[str]) -> pa.Table:
    """Some columns of a whole part, read group by group (an unreadable group raises UnreadableRowGroup)."""
    tables = list(read_part_groups(part, columns))
    return pa.concat_tables(tables) if tables else pa.schema([READ_SCHEMA.field(c) for c in columns]).empty_table()


def read_row_groups(part: PartFile, row_groups: list[int], *, labeled_only: bool) -> pa.Table:
    """Some row groups of a part with ``READ_COLUMNS`` (the ``lang`` partition column added), cast like
    ``read_part``: the Ray reader's unit (data/pieces.py). An unreadable group raises UnreadableRowGroup."""
    table = pa.concat_tables(read_part_groups(part, READ_COLUMNS[:-1], row_groups))
    if labeled_only:
        table = table.filter(pc.is_valid(table["phones"]))
    return table.append_column("lang", pa.array([part.lang] * table.num_rows, pa.string()))


def read_part_batches(part: PartFile, *, labeled_only: bool, batch_rows: int):
    """The local (non-Ray) reader: a part's rows in tables of at most ``batch_rows`` rows, with the ``lang``
    partition column, read group by group (an unreadable group raises UnreadableRowGroup)."""
    for group in read_part_groups(part, READ_COLUMNS[:-1]):
        for batch in group.to_batches(max_chunksize=batch_rows):
            table = pa.Table.from_batches([batch], schema=group.schema)
            if labeled_only:
                table = table.filter(pc.is_valid(table["phones"]))
            yield table.append_column("lang", pa.array([part.lang] * table.num_rows, pa.string()))


def language_rates(parts: list[PartFile], alpha: float, *, labeled_only: bool) -> dict[str, float]:
    """Per-language sampling rates for p_l ~ (n_l / N)^alpha, n_l in hours (XLSR, Conneau et al. 2020).

    A rate is the expected number of times each row of that language is used per epoch, chosen so an
    epoch keeps the corpus's total hours: rate_l = p_l * N / n_l.
    """
    hours: dict[str, float] = {}
    for part in parts:
        cols = ["sample_rate", "num_samples"] + (["phones"] if labeled_only else [])
        t = read_columns(part, cols)
        if labeled_only:
            t = t.filter(pc.is_valid(t["phones"]))
        if t["num_samples"].null_count:  # a part without the column: read the audio headers
            t = _with_header_frames(part, labeled_only)
        secs = pc.sum(pc.divide(pc.cast(t["num_samples"], pa.float64()), t["sample_rate"])).as_py() or 0.0
        hours[part.lang] = hours.get(part.lang, 0.0) + secs / 3600
    total = sum(hours.values())
    if total <= 0:
        return {lang: 1.0 for lang in hours}
    weights = {lang: (h / total) ** alpha for lang, h in hours.items() if h > 0}
    norm = sum(weights.values())
    return {lang: (weights[lang] / norm) * total / hours[lang] if hours[lang] > 0 else 0.0 for lang in hours}


def _with_header_frames(part: PartFile, labeled_only: bool) -> pa.Table:
    """sample_rate and num_samples of a part, the missing num_samples taken from each audio file's header."""
    t = read_columns(part, ["sample_rate", "num_samples", "phones", "audio"])
    if labeled_only:
        t = t.filter(pc.is_valid(t["phones"]))
    declared = t["num_samples"].to_pylist()
    audio = t["audio"].to_pylist()
    frames = [n if n is not None else header_frames(a) for n, a in zip(declared, audio)]
    return pa.table({"sample_rate": t["sample_rate"], "num_samples": pa.array(frames, pa.int64())})


def row_rng(*parts: Any) -> np.random.Generator:
    """A generator that depends only on its arguments (seed, epoch, row id, ...), not on the worker."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little"))


def vocab_from(path: str | Path) -> dict[str, int]:
    """The phone vocabulary of a vocab.json (a local path or a URI); FileNotFoundError/ValueError naming it."""
    from unispeech_core.tokenizer import PhoneTokenizer

    if not is_uri(path):
        return PhoneTokenizer.from_file(path).vocab
    loc = locate(str(path))
    try:
        text = loc.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"vocabulary file not found: {loc}") from None
    return PhoneTokenizer.from_json(text, str(loc)).vocab
