"""What every source importer shares: the source-neutral record, split names, labels, the reasons a row is not
imported, and ``convert`` (one record -> one corpus row or its failure).

A source module (hf, manifest, fairseq, kaldi, commonvoice) only turns its files into :class:`Record` objects,
lazily; ``executors`` runs ``convert`` over them (a local process pool or Ray tasks) and ``run`` streams the
results into the corpus writer, the report and the summary.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from unispeech_platform.data.audio_file import AudioFileError, AudioLimits, read_audio_file
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.failures import Failure
from unispeech_platform.runtime.output_paths import component_problem

from ..audio import TOO_FEW_SAMPLES, decode_audio, encode_flac, to_mono_16k
from ..espeak import G2PError
from ..schema import MIN_SAMPLES, TARGET_SAMPLE_RATE
from ..schema import REPORT_FILE as REPORT_FILE  # its home before the corpus jobs shared it
from .g2p import foreign_words, phonemize_lib, voice_for

TARGETS = ("phones", "chars")
WORD_BOUNDARY = "|"  # the word separator of character targets (wav2vec 2.0's convention)

# Reasons a row is not imported (besides the audio reasons of data/audio.py and the G2P ones of data/espeak.py).
MISSING_AUDIO_FILE = "missing_audio_file"
EMPTY_TEXT = "empty_text"
NO_LANGUAGE = "no_language"
BAD_SEGMENT = "bad_segment"
UNSUPPORTED_AUDIO_SOURCE = "unsupported_audio_source"
NO_VOICE = "no_voice"
DUPLICATE_ID = "duplicate_id"
UNSAFE_NAME = "unsafe_name"  # a language or split value that cannot name a partition directory

# Why a word of a row's text is listed as unknown to the G2P (summary.json's ``unknown_words``).
FOREIGN_WORD = "language_switch"  # espeak-ng reads it in another language: the row is not imported
NOT_LETTERS = "digits_or_symbols"  # read by espeak-ng's number/symbol rules: imported, check that matches the audio
UNKNOWN_WORDS_LISTED = 50  # per language, most frequent first

_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "dev": "dev", "development": "dev",
                  "train": "train", "training": "train", "test": "test", "eval": "test", "evaluation": "test"}


class ImportInputError(JobSetupError, ValueError):
    """The input cannot be imported at all (missing file, missing column, no split); names the file/column."""


def map_split(name: str) -> str:
    """A source's split name in ours: ``validation``/``valid``/``dev*`` -> dev, ``train.clean.100`` -> train,
    ``test.other`` -> test; an unknown name is kept (cleaned to ``[a-z0-9_]``)."""
    low = name.strip().lower()
    head = re.split(r"[._\-\s]", low, maxsplit=1)[0]
    for key in (low, head):
        if key in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[key]
    cleaned = re.sub(r"[^a-z0-9_]+", "_", low).strip("_")
    return cleaned or "train"


def char_tokens(text: str) -> list[str]:
    """Character targets: lower-cased letters, digits and apostrophes, words joined by ``|``; NFC so an accent
    is one token whatever the source's normalisation."""
    words = []
    for word in unicodedata.normalize("NFC", text.lower()).split():
        chars = [c for c in word if c.isalnum() or c == "'"]
        if chars:
            words.append(chars)
    out: list[str] = []
    for i, chars in enumerate(words):
        if i:
            out.append(WORD_BOUNDARY)
        out.extend(chars)
    return out


def pick_column(names: list[str], given: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str | None:
    """The source's ``what`` column: the one the user named (``--<what>-column``; ImportInputError naming the file
    and its columns if it is not there), else the first of ``defaults`` present, else None."""
    if given:
        if given not in names:
            raise ImportInputError(f"{path}: no {what} column {given!r} (columns: {', '.join(names)})")
        return given
    return next((c for c in defaults if c in names), None)


@dataclass(frozen=True)
class Record:
    """One utterance of a source, before decoding. ``audio`` (encoded bytes) or ``path`` (a file to read);
    ``start``/``end`` (seconds) cut a segment out of it. ``where`` names it in the report (file:row)."""

    id: str
    split: str
    lang: str | None
    where: str
    audio: bytes | None = None
    path: str | None = None
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    text: str | None = None
    phones: str | None = None
    problem: tuple[str, str] | None = None  # the source already knows this row is bad: (reason, detail)
    rows: int = 1  # source rows it stands for: an unreadable Parquet row group is one record (data/row_groups.py)


def not_letter_words(text: str) -> list[str]:
    """Words with a digit or symbol (``1999``, ``50%``, ``C++``): espeak-ng expands them by its own rules, which
    may not be what the speaker said, so the import lists them."""
    out = []
    for word in dict.fromkeys(text.split()):
        core = word.strip(".,;:!?¡¿\"'«»“”„()[]…-—–")
        if any(not (c.isalpha() or unicodedata.category(c).startswith("M") or c in "'’-") for c in core):
            out.append(core)
    return out


@dataclass(frozen=True)
class Options:
    targets: str | None  # None: keep existing phones, otherwise unlabeled
    voices: dict[str, str]
    keep_original: bool = False
    limits: AudioLimits = AudioLimits()  # of every audio file a row names by path


Unknown = tuple[tuple[str, str], ...]  # (word, why) pairs of one row: FOREIGN_WORD or NOT_LETTERS
Converted = tuple[Record, dict[str, Any] | None, Failure | None, Unknown]


def convert(rec: Record, opts: Options) -> Converted:
    """Decode, check, label and transcode one record (in a worker process); also the words of its text the G2P
    does not know (``--targets phones`` only)."""
    unknown: Unknown = ()

    def fail(reason: str, detail: str) -> Converted:
        return rec, None, Failure(where=rec.where, id=rec.id, lang=rec.lang or "", split=rec.split, reason=reason,
                                  detail=detail, rows=rec.rows), unknown

    if rec.problem:
        return fail(*rec.problem)
    if not rec.lang:
        return fail(NO_LANGUAGE, "no --lang and the language column is empty")
    for what, value in (("language", rec.lang), ("split", rec.split)):
        problem = component_problem(value)  # it names lang=<language>/split=<split>: never a path outside --out
        if problem:
            return fail(UNSAFE_NAME, f"{what} {problem}")
    text = " ".join((rec.text or "").split()) or None
    phones = " ".join((rec.phones or "").split()) or None
    if phones is None and opts.targets is not None:
        if text is None:
            return fail(EMPTY_TEXT, f"no text to derive {opts.targets} from")
        if opts.targets == "chars":
            phones = " ".join(char_tokens(text)) or None
            if phones is None:
                return fail(EMPTY_TEXT, f"no letters in {text!r}")
        else:
            try:
                voice = voice_for(rec.lang, opts.voices)
                unknown = tuple((w, NOT_LETTERS) for w in not_letter_words(text))
                phones = " ".join(phonemize_lib(text, voice))
            except G2PError as e:
                if e.reason == FOREIGN_WORD:
                    words = foreign_words(text, voice)
                    unknown += tuple((w, FOREIGN_WORD) for w in words)
                    if words:
                        return fail(e.reason, f"espeak-ng's {voice!r} voice reads {', '.join(map(repr, words))} "
                                              f"in another language ({e.detail})")
                return fail(e.reason, e.detail)
            except ValueError as e:  # a language column names a language espeak-ng has no voice for
                return fail(NO_VOICE, str(e))
    audio = rec.audio
    if audio is None and rec.path is not None:
        try:
            audio = read_audio_file(rec.path, opts.limits.max_bytes, opts.limits.timeout_s)  # data/audio_file.py
        except AudioFileError as e:
            return fail(e.reason, e.detail)
    d = decode_audio(audio, None, None)
    if d.error:
        return fail(d.error, d.detail)
    wave = d.wave
    if rec.start is not None or rec.end is not None:
        a = round((rec.start or 0.0) * d.sample_rate)
        b = wave.shape[1] if rec.end is None else round(rec.end * d.sample_rate)
        if not 0 <= a < b <= wave.shape[1] + d.sample_rate // 100:  # 10 ms slack for rounded segment ends
            return fail(BAD_SEGMENT, f"segment {rec.start}-{rec.end} s outside the {wave.shape[1] / d.sample_rate:.2f} s audio")
        wave = wave[:, a:b]
        if round(wave.shape[1] * TARGET_SAMPLE_RATE / d.sample_rate) < MIN_SAMPLES:
            return fail(TOO_FEW_SAMPLES, f"segment {rec.start}-{rec.end} s has {wave.shape[1]} samples at "
                        f"{d.sample_rate} Hz < {MIN_SAMPLES} at 16 kHz")
    if opts.keep_original and rec.start is None and rec.end is None:
        encoded, rate, n = audio, d.sample_rate, wave.shape[1]
    else:
        mono = to_mono_16k(wave, d.sample_rate)
        encoded, rate, n = encode_flac(mono, TARGET_SAMPLE_RATE), TARGET_SAMPLE_RATE, len(mono)
    row = {"id": rec.id, "audio": encoded, "sample_rate": rate, "num_samples": n,
           "speaker": rec.speaker or None, "text": text, "phones": phones}
    return rec, row, None, unknown


def convert_chunk(chunk: list[Record], opts: Options) -> list[Converted]:
    return [convert(r, opts) for r in chunk]


def chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk
