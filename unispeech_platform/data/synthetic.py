"""Offline multilingual speech corpus: wordfreq text spoken by espeak-ng voices (docs/architecture.md#offline-corpus-espeak-ng).

Each language gets ``speakers`` voices (an espeak variant with its own speed and pitch); whole speakers
are assigned to test, dev and train, so evaluation never hears a training voice. Everything is drawn from
``seed``: the same arguments give the same corpus, and re-running into a complete corpus is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .audio import encode_flac, to_mono_16k
from .espeak import G2PError, check_voice, require_espeak, synthesize
from .parallel import parallel_map
from .schema import TARGET_SAMPLE_RATE
from .summary import print_table, write_summary
from .writer import CorpusWriter, prepare_output

CLEAN_LANGS = ("en-us", "es", "fr", "de", "it", "nl", "sv", "pl", "pt", "ru", "tr")
VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))
GENERATOR_VERSION = 1  # bump when output for the same arguments changes
MAX_ATTEMPTS = 20  # texts tried per utterance before giving up (language switches are common in fr/sv/ru)
TOP_WORDS = 5000


@dataclass(frozen=True)
class Speaker:
    id: str
    lang: str
    voice: str
    speed: int
    pitch: int
    split: str


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise; carries everything a worker process needs."""

    id: str
    speaker: Speaker
    labeled: bool
    seed: int
    min_words: int
    max_words: int


def _stable(*parts: Any) -> int:
    """A process-independent integer hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def wordfreq_code(lang: str) -> str:
    """The wordfreq language of an espeak voice code (``en-us`` -> ``en``); errors if wordfreq lacks it."""
    import wordfreq

    code = lang.split("-")[0]
    # wordfreq silently falls back to another list for languages it lacks (ky, tt): check explicitly.
    if code not in wordfreq.available_languages():
        raise ValueError(
            f"wordfreq has no word list for {lang!r} (available: {sorted(wordfreq.available_languages())})"
        )
    return code


@cache
def _words(lang: str) -> tuple[str, ...]:
    import wordfreq

    return tuple(w for w in wordfreq.top_n_list(wordfreq_code(lang), TOP_WORDS) if w.isalpha())


def make_speakers(lang: str, count: int, dev: int, test: int, seed: int) -> list[Speaker]:
    """``count`` distinct voices; the first ``test`` go to test, the next ``dev`` to dev, the rest to train."""
    if count > len(VARIANTS):
        raise ValueError(f"at most {len(VARIANTS)} speakers per language (espeak variants), got {count}")
    if count < dev + test + 1:
        raise ValueError(f"{count} speakers cannot cover {test} test + {dev} dev + at least 1 train speaker")
    rng = np.random.default_rng(_stable("speakers", seed, lang))
    variants = rng.permutation(VARIANTS)[:count]
    splits = ["test"] * test + ["dev"] * dev + ["train"] * (count - dev - test)
    return [
        Speaker(f"{lang}-{v}", lang, f"{lang}+{v}", int(rng.integers(145, 196)), int(rng.integers(30, 76)), s)
        for v, s in zip(variants, splits, strict=True)
    ]


def synth_one(job: Job) -> tuple[Job, dict[str, Any] | None, Counter]:
    """Speak one random text; retry with new text on G2P rejections. Runs in a worker process."""
    rejected: Counter = Counter()
    words = _words(job.speaker.lang)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng(_stable("text", job.seed, job.id, attempt))
        n = int(rng.integers(job.min_words, job.max_words + 1))
        text = " ".join(words[i] for i in rng.integers(0, len(words), n))
        try:
            wave, rate, phones = synthesize(
                text, job.speaker.voice, speed=job.speaker.speed, pitch=job.speaker.pitch
            )
        except G2PError as e:
            rejected[e.reason] += 1
            continue
        wave16 = to_mono_16k(wave[None, :], rate)
        row = {
            "id": job.id,
            "audio": encode_flac(wave16, TARGET_SAMPLE_RATE),
            "sample_rate": TARGET_SAMPLE_RATE,
            "num_samples": len(wave16),
            "speaker": job.speaker.id,
            "text": text,
            "phones": " ".join(phones) if job.labeled else None,
        }
        return job, row, rejected
    rejected["gave_up"] += 1
    return job, None, rejected


def plan_jobs(args: dict[str, Any]) -> list[Job]:
    """Every utterance of the corpus, in a fixed order (language, then index)."""
    jobs = []
    for lang in args["langs"]:
        speakers = make_speakers(
            lang, args["speakers"], args["dev_speakers"], args["test_speakers"], args["seed"]
        )
        label_rng = np.random.default_rng(_stable("labels", args["seed"], lang))
        for i in range(args["per_lang"]):
            spk = speakers[i % len(speakers)]
            # Only train rows may be unlabeled: dev/test need references for PER.
            unlabeled = spk.split == "train" and label_rng.random() < args["unlabeled_fraction"]
            jobs.append(
                Job(f"{lang}-{i:06d}", spk, not unlabeled, args["seed"], args["min_words"], args["max_words"])
            )
    return jobs


def make_corpus(
    out: str | Path,
    langs: Sequence[str],
    per_lang: int,
    *,
    speakers: int = 6,
    dev_speakers: int = 1,
    test_speakers: int = 1,
    unlabeled_fraction: float = 0.0,
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 10,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    row_group_bytes: int = 64 << 20,
) -> dict[str, Any]:
    """Build (or reuse) a synthetic corpus under ``out``; returns the summary dict (also in summary.json).

    A complete corpus made with the same arguments is reused as is. One made with other arguments raises
    unless ``overwrite``; an incomplete one (no summary.json, e.g. after a crash) is rebuilt.
    """
    if not 0.0 <= unlabeled_fraction < 1.0:
        raise ValueError(f"unlabeled_fraction must be in [0, 1), got {unlabeled_fraction}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    args = {
        "generator": f"espeak-ng/wordfreq v{GENERATOR_VERSION}",
        "langs": list(langs),
        "per_lang": per_lang,
        "speakers": speakers,
        "dev_speakers": dev_speakers,
        "test_speakers": test_speakers,
        "unlabeled_fraction": unlabeled_fraction,
        "seed": seed,
        "min_words": min_words,
        "max_words": max_words,
    }
    out = Path(out)
    existing = prepare_output(out, args, overwrite=overwrite)
    if existing is not None:
        print(f"corpus {out} is complete for these arguments: reusing it")
        return existing
    require_espeak()
    for lang in langs:
        wordfreq_code(lang)
        check_voice(lang)

    jobs = plan_jobs(args)
    workers = workers or os.cpu_count() or 1
    workers = max(
        1, min(workers, len(jobs) // 16)
    )  # a pool costs ~2 s to start: not worth it for tiny corpora
    rejected: dict[str, Counter] = {lang: Counter() for lang in langs}
    with CorpusWriter(out, row_group_bytes=row_group_bytes) as writer:
        results = parallel_map(synth_one, jobs, workers or os.cpu_count() or 1)
        for job, row, rej in tqdm(
            results, total=len(jobs), desc="synthesising", unit="utt", disable=not progress
        ):
            rejected[job.speaker.lang].update(rej)
            if row is not None:
                writer.write(job.speaker.lang, job.speaker.split, row)
    spk = {
        lang: [asdict(s) for s in make_speakers(lang, speakers, dev_speakers, test_speakers, seed)]
        for lang in langs
    }
    summary = write_summary(
        out, writer.stats, args=args, speakers=spk, rejected={k: dict(v) for k, v in rejected.items()}
    )
    print_table(writer.stats.table(f"synthetic corpus {out}"))
    gave_up = {k: v["gave_up"] for k, v in rejected.items() if v.get("gave_up")}
    if gave_up:
        print(f"WARNING: utterances given up after {MAX_ATTEMPTS} rejected texts: {gave_up}")
    return summary
