"""Offline multilingual speech corpus: wordfreq text spoken by espeak-ng voices (docs/architecture.md#offline-corpus-espeak-ng).

Each language gets ``speakers`` voices (an espeak variant with its own speed and pitch); whole speakers
are assigned to test, dev and train, so evaluation never hears a training voice. Everything is drawn from
``seed``: the same arguments give the same corpus, and re-running into a complete corpus is a no-op.

Two optional extras (docs/data.md#synthetic-corpus-extras), both off by default so existing corpora keep their
arguments: unlabeled train rows of further languages (``unlabeled_*``: phones null, spoken by voices that are
never another corpus' dev/test speakers), and a shifted test condition (``shifted``: the test texts re-spoken by
other voices, rates and pitches, through a telephone-like channel).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from unispeech_platform.runtime.errors import JobSetupError

from .audio import encode_flac, to_mono_16k
from .espeak import G2PError, check_voice, require_espeak, synthesize
from .parallel import parallel_map
from .schema import TARGET_SAMPLE_RATE
from .summary import CorpusStats, print_table, write_summary
from .writer import CorpusWriter, prepare_output

if TYPE_CHECKING:
    from unispeech_platform.runtime.output_paths import OutputDir

CLEAN_LANGS = ("en-us", "es", "fr", "de", "it", "nl", "sv", "pl", "pt", "ru", "tr")
VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))
GENERATOR_VERSION = 1  # bump when output for the same arguments changes
MAX_ATTEMPTS = 20  # texts tried per utterance before giving up (language switches are common in fr/sv/ru)
TOP_WORDS = 5000
SPEED_RANGE = (145, 196)  # words per minute of the corpus voices (high end exclusive)
PITCH_RANGE = (30, 76)  # espeak pitch 0-99 of the corpus voices (high end exclusive)


@dataclass(frozen=True)
class ShiftedCondition:
    """A recording condition training never has: the test texts re-spoken by espeak voice variants none of the
    corpus voices use (VARIANTS), at speaking rates and pitches outside SPEED_RANGE/PITCH_RANGE, then recorded
    through a telephone-like chain: background noise at a drawn SNR, a band limit, a lossy codec.

    The chain is data/augment.py's (the training augmentation's own effects, torchaudio and libsndfile
    underneath), so "shifted" means the same thing to the test split as to augmentation.
    """

    split: str = "test_shifted"
    voices: tuple[str, ...] = ("klatt3", "Andy", "Annie")
    """espeak-ng variants (``espeak-ng --voices=variant``): test speaker k is re-spoken by voices[k % len]."""
    speed: tuple[int, int] = (205, 236)
    """Words per minute, drawn per voice in [lo, hi) (corpus voices: SPEED_RANGE)."""
    pitch: tuple[int, int] = (80, 100)
    """espeak pitch, drawn per voice in [lo, hi) (corpus voices: PITCH_RANGE)."""
    snr_db: tuple[float, float] | None = (10.0, 20.0)
    """Background-noise SNR in dB, drawn per utterance in [lo, hi); None: no noise."""
    noise_colour: str = "pink"
    """white, pink or brown (data/augment.py NOISE_EXPONENTS)."""
    bandlimit_hz: tuple[float, float] | None = (300.0, 3400.0)
    """(high-pass, low-pass) cutoffs in Hz: the telephone band; None: full band."""
    codec: str | None = "mulaw"
    """A codec round trip (data/augment.py CODEC_FORMATS; mulaw = G.711 at 8 kHz); None: none."""

    def check(self) -> None:
        """Raise ValueError naming the field if the condition overlaps the training voices or is malformed."""
        if self.split in ("train", "dev", "test"):
            raise ValueError(f"shifted.split {self.split!r} would mix into a corpus split: name it apart")
        if not self.voices:
            raise ValueError("shifted.voices: give at least one espeak variant")
        seen = sorted(set(self.voices) & set(VARIANTS))
        if seen:
            raise ValueError(f"shifted.voices {seen} are corpus training voices (VARIANTS); pick others")
        for name, (lo, hi), (tlo, thi) in (("speed", self.speed, SPEED_RANGE), ("pitch", self.pitch, PITCH_RANGE)):
            if not lo < hi:
                raise ValueError(f"shifted.{name}: need lo < hi, got [{lo}, {hi})")
            if lo < thi and tlo < hi:
                raise ValueError(f"shifted.{name} [{lo}, {hi}) overlaps the training range [{tlo}, {thi})")
        if not (0 <= self.pitch[0] and self.pitch[1] <= 100):
            raise ValueError(f"shifted.pitch must lie in espeak's 0-99, got {list(self.pitch)}")
        from .augment import CODEC_FORMATS, NOISE_EXPONENTS

        if self.snr_db is not None and not self.snr_db[0] < self.snr_db[1]:
            raise ValueError(f"shifted.snr_db: need lo < hi, got {list(self.snr_db)}")
        if self.noise_colour not in NOISE_EXPONENTS:
            raise ValueError(f"shifted.noise_colour {self.noise_colour!r}: one of {list(NOISE_EXPONENTS)}")
        if self.bandlimit_hz is not None and not 0 <= self.bandlimit_hz[0] < self.bandlimit_hz[1] < 8000:
            raise ValueError(f"shifted.bandlimit_hz: need 0 <= high-pass < low-pass < 8000, got {list(self.bandlimit_hz)}")
        if self.codec is not None and self.codec not in CODEC_FORMATS:
            raise ValueError(f"shifted.codec {self.codec!r}: one of {list(CODEC_FORMATS)} or null")

    def args(self) -> dict[str, Any]:
        """JSON-normal form (lists, not tuples) so it compares equal to the copy read back from summary.json."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ShiftedCondition:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


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
    text_key: str = ""
    """Whose text to speak (default: this id); a shifted row speaks its test row's text."""
    shift: ShiftedCondition | None = None
    """Pass the audio through this condition's channel."""


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


def check_speaker_counts(count: int, dev: int, test: int) -> None:
    """ValueError unless ``count`` espeak variants exist and leave at least one train speaker."""
    if count > len(VARIANTS):
        raise ValueError(f"at most {len(VARIANTS)} speakers per language (espeak variants), got {count}")
    if count < dev + test + 1:
        raise ValueError(f"{count} speakers cannot cover {test} test + {dev} dev + at least 1 train speaker")


def make_speakers(lang: str, count: int, dev: int, test: int, seed: int) -> list[Speaker]:
    """``count`` distinct voices; the first ``test`` go to test, the next ``dev`` to dev, the rest to train."""
    check_speaker_counts(count, dev, test)
    rng = np.random.default_rng(_stable("speakers", seed, lang))
    variants = rng.permutation(VARIANTS)[:count]
    splits = ["test"] * test + ["dev"] * dev + ["train"] * (count - dev - test)
    # Speaker k's voice, speed and pitch do not depend on count (one permutation, then draws in speaker order):
    # unlabeled_speakers relies on it.
    return [
        Speaker(f"{lang}-{v}", lang, f"{lang}+{v}", int(rng.integers(*SPEED_RANGE)), int(rng.integers(*PITCH_RANGE)), s)
        for v, s in zip(variants, splits, strict=True)
    ]


def unlabeled_speakers(lang: str, held_out: int, seed: int) -> list[Speaker]:
    """Every voice of ``lang`` except the first ``held_out`` of its voice order: a corpus of this seed with
    ``dev + test <= held_out`` has its dev and test speakers among those first ones, so unlabeled audio spoken
    by these never shares a voice (variant, speed, pitch) with its evaluation speakers."""
    return [
        Speaker(s.id, s.lang, s.voice, s.speed, s.pitch, "train")
        for s in make_speakers(lang, len(VARIANTS), 0, held_out, seed)[held_out:]
    ]


def shifted_speakers(lang: str, cond: ShiftedCondition, seed: int) -> list[Speaker]:
    """One speaker per shifted voice, its rate and pitch drawn from the condition's ranges."""
    rng = np.random.default_rng(_stable("shifted", seed, lang))
    return [
        Speaker(f"{lang}-{v}-shifted", lang, f"{lang}+{v}", int(rng.integers(*cond.speed)),
                int(rng.integers(*cond.pitch)), cond.split)
        for v in cond.voices
    ]


def espeak_variants() -> set[str]:
    """Names of espeak-ng's voice variants (``lang+<name>``). Needed because espeak-ng accepts an unknown
    variant silently (exit 0, default voice), so a typo would shift nothing."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return {line.split()[4].removeprefix("!v/") for line in out.splitlines()[1:] if len(line.split()) >= 5}


def apply_channel(wave: np.ndarray, cond: ShiftedCondition, key: str) -> np.ndarray:
    """``wave`` (mono, 16 kHz) through the condition's chain; the noise and its SNR are seeded by ``key``."""
    import torch

    from .augment import add_noise, band_limit, codec_round_trip, coloured_noise

    rng = np.random.default_rng(_stable("channel", key))
    x = torch.from_numpy(np.array(wave, dtype=np.float32))
    with torch.no_grad():
        if cond.snr_db is not None:  # the room's noise first, then the channel it is recorded through
            x = add_noise(x, coloured_noise(cond.noise_colour, len(x), rng), float(rng.uniform(*cond.snr_db)))
        if cond.bandlimit_hz is not None:
            x = band_limit(x, *cond.bandlimit_hz)
        if cond.codec is not None:
            x = codec_round_trip(x, cond.codec, 1.0)
    return x.numpy()


def synth_one(job: Job) -> tuple[Job, dict[str, Any] | None, Counter]:
    """Speak one random text; retry with new text on G2P rejections. Runs in a worker process."""
    rejected: Counter = Counter()
    words = _words(job.speaker.lang)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng(_stable("text", job.seed, job.text_key or job.id, attempt))
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
        if job.shift is not None:
            wave16 = apply_channel(wave16, job.shift, job.id)
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
    """Every utterance of the corpus, in a fixed order (language, then index; then the unlabeled extras).

    The extras only append jobs: a corpus' labeled rows are the same with or without them."""
    jobs = []
    seed, words = args["seed"], (args["min_words"], args["max_words"])
    shift = ShiftedCondition.from_args(args["shifted"]) if args.get("shifted") else None
    for lang in args["langs"]:
        speakers = make_speakers(lang, args["speakers"], args["dev_speakers"], args["test_speakers"], seed)
        label_rng = np.random.default_rng(_stable("labels", seed, lang))
        test_speakers = [s.id for s in speakers if s.split == "test"]
        shifted = shifted_speakers(lang, shift, seed) if shift else []
        for i in range(args["per_lang"]):
            spk = speakers[i % len(speakers)]
            # Only train rows may be unlabeled: dev/test need references for PER.
            unlabeled = spk.split == "train" and label_rng.random() < args["unlabeled_fraction"]
            jobs.append(Job(f"{lang}-{i:06d}", spk, not unlabeled, seed, *words))
            if shift and spk.split == "test":
                voice = shifted[test_speakers.index(spk.id) % len(shifted)]
                jobs.append(Job(f"{lang}-{i:06d}-shifted", voice, True, seed, *words, text_key=f"{lang}-{i:06d}",
                                shift=shift))
    extra = args.get("unlabeled")
    if extra:
        for lang in extra["langs"]:
            held_out = max(extra["held_out_speakers"],
                           args["dev_speakers"] + args["test_speakers"] if lang in args["langs"] else 0)
            voices = unlabeled_speakers(lang, held_out, seed)
            for i in range(extra["per_lang"]):
                jobs.append(Job(f"{lang}-u{i:06d}", voices[i % len(voices)], False, seed, *words))
    return jobs


@dataclass(frozen=True)
class SynthesisSpec:
    """What a synthetic corpus is made of, declared once: make_corpus, synthesis_args and jobs.make_corpus all
    take these fields. Its args() are what the corpus is recorded (and reused) by in summary.json."""

    langs: Sequence[str]
    """espeak-ng voices (CLEAN_LANGS have clean IPA); each gets its own speakers."""
    per_lang: int
    """Utterances per language, all splits together."""
    speakers: int = 6
    """Voices per language (espeak variants, at most len(VARIANTS))."""
    dev_speakers: int = 1
    """Speakers per language held out for dev."""
    test_speakers: int = 1
    """Speakers per language held out for test."""
    unlabeled_fraction: float = 0.0
    """Share of train rows stored without phones, in [0, 1)."""
    unlabeled_langs: Sequence[str] = ()
    """Languages (in ``langs`` or not) of the unlabeled extra; used only when ``unlabeled_per_lang`` > 0."""
    unlabeled_per_lang: int = 0
    """> 0 adds that many unlabeled train rows (phones null) of each of ``unlabeled_langs``."""
    unlabeled_held_out_speakers: int = 2
    """The extra is spoken by every voice of its language except the first this many of its voice order: pass
    another corpus' dev + test speaker count (same seed) to keep its evaluation voices out."""
    shifted: ShiftedCondition | None = None
    """Adds its split: every test row re-spoken under that condition (ids end in ``-shifted``)."""
    seed: int = 0
    min_words: int = 4
    """Shortest text in words (2-4 words give ~1-2 s clips)."""
    max_words: int = 10
    """Longest text in words."""

    @property
    def all_langs(self) -> list[str]:
        """Every language the corpus speaks, labeled ones first."""
        return list(dict.fromkeys([*self.langs, *self.unlabeled_langs]))

    def args(self) -> dict[str, Any]:
        """The recorded arguments, checked (ValueError names the field). The unlabeled extra and the
        shifted split enter only when used, so corpora made without them keep the arguments (and the
        summary.json) they always had and are reused unchanged."""
        if not 0.0 <= self.unlabeled_fraction < 1.0:
            raise ValueError(f"unlabeled_fraction must be in [0, 1), got {self.unlabeled_fraction}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        check_speaker_counts(self.speakers, self.dev_speakers, self.test_speakers)
        args: dict[str, Any] = {
            "generator": f"espeak-ng/wordfreq v{GENERATOR_VERSION}",
            "langs": list(self.langs),
            "per_lang": self.per_lang,
            "speakers": self.speakers,
            "dev_speakers": self.dev_speakers,
            "test_speakers": self.test_speakers,
            "unlabeled_fraction": self.unlabeled_fraction,
            "seed": self.seed,
            "min_words": self.min_words,
            "max_words": self.max_words,
        }
        if self.unlabeled_per_lang < 0 or (self.unlabeled_per_lang and not self.unlabeled_langs):
            raise ValueError(
                f"unlabeled_per_lang={self.unlabeled_per_lang} needs unlabeled_langs and must be >= 0"
            )
        if self.unlabeled_per_lang:
            if not 0 <= self.unlabeled_held_out_speakers < len(VARIANTS):
                raise ValueError(f"unlabeled_held_out_speakers must be in [0, {len(VARIANTS)}), "
                                 f"got {self.unlabeled_held_out_speakers}")
            args["unlabeled"] = {"langs": list(self.unlabeled_langs), "per_lang": self.unlabeled_per_lang,
                                 "held_out_speakers": self.unlabeled_held_out_speakers}
        if self.shifted is not None:
            self.shifted.check()
            args["shifted"] = self.shifted.args()
        return args


def synthesis_args(langs: Sequence[str], per_lang: int, **fields: Any) -> dict[str, Any]:
    """The arguments a corpus is recorded (and reused) by, checked; ``fields`` are SynthesisSpec's."""
    return SynthesisSpec(langs, per_lang, **fields).args()


def make_corpus(
    out: str | Path,
    langs: Sequence[str],
    per_lang: int,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    row_group_bytes: int = 64 << 20,
    **fields: Any,
) -> dict[str, Any]:
    """Build (or reuse) a synthetic corpus under ``out``; returns the summary dict (also in summary.json).
    ``langs``, ``per_lang`` and ``fields`` are SynthesisSpec's fields (a TypeError names an unknown one).

    A complete corpus made with the same arguments is reused as is. One made with other arguments raises
    unless ``overwrite``; an incomplete one (no summary.json, e.g. after a crash) is rebuilt. Only what a corpus
    job made there is ever removed (docs/data.md#where-a-job-writes).
    """
    spec = SynthesisSpec(langs, per_lang, **fields)
    args = spec.args()
    check_tools(spec)  # before the output is touched: a missing voice or word list leaves no trace
    output, existing = prepare_output(out, args, overwrite=overwrite)
    if existing is not None:
        print(f"corpus {out} is complete for these arguments: reusing it")
        return existing
    out = output.root
    jobs = plan_jobs(args)
    stats, rejected = synthesise(output, jobs, spec.all_langs, workers, progress, row_group_bytes)
    summary = write_summary(out, stats, args=args, speakers=speaker_table(spec, jobs),
                            rejected={k: dict(v) for k, v in rejected.items()})
    print_table(stats.table(f"synthetic corpus {out}"))
    gave_up = {k: v["gave_up"] for k, v in rejected.items() if v.get("gave_up")}
    if gave_up:
        print(f"WARNING: utterances given up after {MAX_ATTEMPTS} rejected texts: {gave_up}")
    return summary


class MissingToolError(JobSetupError, ValueError):
    """espeak-ng, a word list, a voice or a variant the corpus needs is not on this machine."""


def check_tools(spec: SynthesisSpec) -> None:
    """Fail before any work if espeak-ng, a word list, a voice or a shifted variant is missing: MissingToolError
    (one line, exit 3 in a job) since the machine, not the code, lacks it."""
    try:
        require_espeak()
        for lang in spec.all_langs:
            wordfreq_code(lang)
            check_voice(lang)
    except (RuntimeError, ValueError) as e:
        raise MissingToolError(str(e)) from None
    if spec.shifted is not None:
        missing = sorted(set(spec.shifted.voices) - espeak_variants())
        if missing:
            raise MissingToolError(
                f"shifted.voices {missing}: espeak-ng has no such variant (espeak-ng --voices=variant)")


def synthesise(
    out: OutputDir, jobs: list[Job], langs: list[str], workers: int | None, progress: bool, row_group_bytes: int
) -> tuple[CorpusStats, dict[str, Counter]]:
    """Speak every job (in worker processes) and stream the rows into the corpus ``out``; returns the writer's stats and
    the rejected texts per language and reason."""
    # a pool costs ~2 s to start: not worth it for tiny corpora
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) // 16))
    rejected: dict[str, Counter] = {lang: Counter() for lang in langs}
    with CorpusWriter(out, row_group_bytes=row_group_bytes) as writer:
        results = parallel_map(synth_one, jobs, workers)
        for job, row, rej in tqdm(results, total=len(jobs), desc="synthesising", unit="utt",
                                  disable=not progress):
            rejected[job.speaker.lang].update(rej)
            if row is not None:
                writer.write(job.speaker.lang, job.speaker.split, row)
    return writer.stats, rejected


def speaker_table(spec: SynthesisSpec, jobs: list[Job]) -> dict[str, list[dict[str, Any]]]:
    """Every voice per language as summary.json lists it: the corpus speakers, the shifted voices, and the
    unlabeled extra's voices that spoke at least one row (``labeled: false``)."""
    spk: dict[str, list[dict[str, Any]]] = {
        lang: [asdict(s) for s in make_speakers(lang, spec.speakers, spec.dev_speakers, spec.test_speakers,
                                                spec.seed)]
        for lang in spec.langs
    }
    if spec.shifted is not None:
        for lang in spec.langs:
            spk[lang] += [asdict(s) for s in shifted_speakers(lang, spec.shifted, spec.seed)]
    spoken = {(j.speaker.lang, j.speaker.id) for j in jobs if not j.labeled}
    for lang in spec.unlabeled_langs if spec.unlabeled_per_lang else ():
        known = {d["id"] for d in spk.get(lang, [])}
        spk.setdefault(lang, []).extend(
            {**asdict(s), "labeled": False} for s in unlabeled_speakers(lang, 0, spec.seed)
            if (lang, s.id) in spoken and s.id not in known
        )
    return spk
