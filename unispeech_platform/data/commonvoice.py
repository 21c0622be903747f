"""Import a Common Voice release into the corpus layout, with phones from espeak-ng G2P of each sentence.

Input per language: ``<cv_dir>/<lang>/clips/*.mp3`` and ``train.tsv``, ``dev.tsv``, ``test.tsv`` (columns
client_id, path, sentence, ...). Common Voice's own splits are speaker-disjoint, so we keep them;
``validated.tsv`` can add its rows that are in no split, minus dev/test speakers, to train. Clips are
transcoded to 16 kHz mono FLAC (or kept as MP3). Every row that cannot be imported is reported with its
reason (printed and written to ``import_report.tsv``): nothing is dropped silently.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .audio import decode_audio, encode_flac, to_mono_16k
from .espeak import G2PError, check_voice, phonemize, require_espeak
from .parallel import parallel_map
from .schema import TARGET_SAMPLE_RATE
from .summary import atomic_write_text, print_table, write_summary
from .writer import CorpusWriter, prepare_output

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
REPORT_FILE = "import_report.tsv"
# Common Voice locale -> espeak-ng voice, where the two differ.
DEFAULT_VOICES = {"en": "en-us", "sv-SE": "sv", "pt": "pt", "fy-NL": "fy", "ga-IE": "ga", "zh-CN": "cmn"}

MISSING_CLIP = "missing_clip"
EMPTY_SENTENCE = "empty_sentence"


@dataclass(frozen=True)
class Clip:
    lang: str
    split: str
    voice: str
    clip: str  # absolute path of the mp3
    client_id: str
    sentence: str
    keep_original: bool


@dataclass
class Failure:
    lang: str
    split: str
    path: str
    reason: str
    detail: str

    def line(self) -> str:
        return "\t".join((self.lang, self.split, self.path, self.reason, self.detail.replace("\t", " ")))


def voice_for(lang: str, voices: dict[str, str] | None = None) -> str:
    return (voices or {}).get(lang) or DEFAULT_VOICES.get(lang) or lang.split("-")[0].lower()


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a Common Voice TSV (no quoting: sentences contain quotes); errors name the file and column."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for col in REQUIRED_COLUMNS:
            if col not in (reader.fieldnames or []):
                raise ValueError(f"{path}: missing column {col!r} (has {reader.fieldnames})")
        return list(reader)


def plan_clips(
    cv_dir: Path, lang: str, voice: str, *, validated_extra: bool, keep_original: bool
) -> list[Clip]:
    """The clips of one language in split order, as listed by its TSV files."""
    root = cv_dir / lang
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Common Voice language directory")
    rows: dict[str, list[dict[str, str]]] = {}
    for split, name in SPLIT_FILES.items():
        path = root / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing (a Common Voice language needs {', '.join(SPLIT_FILES.values())})"
            )
        rows[split] = read_tsv(path)
    if validated_extra and (root / "validated.tsv").exists():
        used = {r["path"] for rs in rows.values() for r in rs}
        held_out = {r["client_id"] for s in ("dev", "test") for r in rows[s]}
        extra = [
            r
            for r in read_tsv(root / "validated.tsv")
            if r["path"] not in used and r["client_id"] not in held_out
        ]
        rows["train"] = rows["train"] + extra
    return [
        Clip(
            lang,
            split,
            voice,
            str(root / "clips" / r["path"]),
            r["client_id"],
            r["sentence"] or "",
            keep_original,
        )
        for split, rs in rows.items()
        for r in rs
    ]


def convert(clip: Clip) -> tuple[Clip, dict[str, Any] | None, Failure | None]:
    """Decode, check, G2P and transcode one clip (runs in a worker process)."""
    name = Path(clip.clip).name

    def fail(reason: str, detail: str) -> tuple[Clip, None, Failure]:
        return clip, None, Failure(clip.lang, clip.split, name, reason, detail)

    sentence = " ".join(clip.sentence.split())
    if not sentence:
        return fail(EMPTY_SENTENCE, "the sentence is empty")
    try:
        audio = Path(clip.clip).read_bytes()
    except OSError as e:
        return fail(MISSING_CLIP, f"{clip.clip}: {e.strerror}")
    d = decode_audio(audio, None, None)
    if d.error:
        return fail(d.error, d.detail)
    try:
        phones = phonemize(sentence, clip.voice)
    except G2PError as e:
        return fail(e.reason, e.detail)
    if clip.keep_original:
        encoded, rate, n = audio, d.sample_rate, d.wave.shape[1]
    else:
        wave = to_mono_16k(d.wave, d.sample_rate)
        encoded, rate, n = encode_flac(wave, TARGET_SAMPLE_RATE), TARGET_SAMPLE_RATE, len(wave)
    row = {
        "id": f"cv-{clip.lang}-{Path(name).stem}",
        "audio": encoded,
        "sample_rate": rate,
        "num_samples": n,
        "speaker": clip.client_id,
        "text": sentence,
        "phones": " ".join(phones),
    }
    return clip, row, None


def import_commonvoice(
    cv_dir: str | Path,
    langs: Sequence[str],
    out: str | Path,
    *,
    voices: dict[str, str] | None = None,
    validated_extra: bool = False,
    keep_original: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], list[Failure]]:
    """Convert ``langs`` of a Common Voice release under ``cv_dir`` into a corpus at ``out``.

    Returns the summary (also written to summary.json) and the rows that failed, each with its reason
    (also written to ``<out>/import_report.tsv``). Re-running into a complete import is a no-op.
    """
    cv_dir, out = Path(cv_dir), Path(out)
    args = {
        "source": str(cv_dir.resolve()),
        "langs": list(langs),
        "voices": {lang: voice_for(lang, voices) for lang in langs},
        "validated_extra": validated_extra,
        "keep_original": keep_original,
    }
    existing = prepare_output(out, args, overwrite=overwrite)
    if existing is not None:
        print(f"corpus {out} is complete for these arguments: reusing it")
        return existing, [Failure(**f) for f in existing.get("failures", [])]
    require_espeak()
    clips: list[Clip] = []
    for lang in langs:
        check_voice(args["voices"][lang])
        clips += plan_clips(
            cv_dir, lang, args["voices"][lang], validated_extra=validated_extra, keep_original=keep_original
        )
    failures: list[Failure] = []
    with CorpusWriter(out) as writer:
        results = parallel_map(convert, clips, workers or os.cpu_count() or 1)
        for clip, row, failure in tqdm(
            results, total=len(clips), desc="importing", unit="clip", disable=not progress
        ):
            if failure is not None:
                failures.append(failure)
                print(f"FAILED {failure.line()}")
            else:
                writer.write(clip.lang, clip.split, row)
    report = "lang\tsplit\tpath\treason\tdetail\n" + "".join(f.line() + "\n" for f in failures)
    atomic_write_text(out / REPORT_FILE, report)
    reasons = Counter(f.reason for f in failures)
    summary = write_summary(
        out, writer.stats, args=args, failed=dict(reasons), failures=[f.__dict__ for f in failures]
    )
    print_table(writer.stats.table(f"Common Voice import {out}"))
    if failures:
        print(f"{len(failures)} clips not imported ({dict(reasons)}); see {out / REPORT_FILE}")
    return summary, failures
