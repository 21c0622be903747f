"""How sure the experiment's comparison is: two sources of noise, reported separately and then together.

- **Seeds** (initial weights, masks, negatives, batch order: ``experiment.seeds``): per arm and language the mean
  and the *sample* standard deviation (ddof 1) of PER over seeds, and each seed's own value; the average column is
  each seed's macro average over languages, then mean ± sd over seeds.
- **The relative PER reduction** of the reference arm vs every other arm, ``(PER_base - PER_ref) / PER_base``, with
  a 95% percentile **hierarchical bootstrap** interval that resamples every level the result could have come out
  differently at, top down: (1) the seeds (drawn with replacement; a seed is a whole training run of every arm),
  (2) within each language its test speakers (with replacement), (3) within each drawn speaker that speaker's
  utterances (with replacement, as many as the speaker has). Utterances of one speaker are not independent (same
  voice, same recording conditions), so treating them as independent draws narrows the interval for nothing; and
  three trained models are not "the method": a result that holds in two seeds of three is not a result.
  **The same draw serves every arm** (a paired comparison: seed ``s`` of every arm is drawn together, and so is
  every utterance, so sentence difficulty cancels). In a resample, PER of a language is pooled like jiwer's corpus
  PER (sum of edits / sum of reference phones over the drawn utterances, with multiplicity) per drawn seed, then
  averaged over the drawn seeds, then macro-averaged over languages for the average.

When the speakers of the test utterances are unknown (no speaker map given), every utterance is its own speaker
and levels (2)-(3) reduce to the plain utterance bootstrap. ``resample_seeds=False`` keeps the seeds fixed (the
interval then answers only "would another test set change the verdict for these trained models").
The verdict word ("better"/"worse") is printed only when the interval excludes 0.
Hand-written with numpy: scipy's ``bootstrap`` resamples one flat index and cannot nest speakers in languages nor
pair arms over seeds, which is the whole point here.

Per-utterance edits come from the evaluation's ``predictions.jsonl`` (ref and hyp phone strings per utterance,
docs/evaluation.md) through jiwer's per-sentence alignments, the same alignment the PER table is computed from;
speakers come from the corpus (``data/speakers.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

AVERAGE = "avg"
"""The macro average over languages (each language counts the same, as in the paper's table)."""
RESAMPLES = 2000
BOOTSTRAP_SEED = 2000
"""Fixed, so a results table is reproducible from its evaluation outputs."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class UtteranceErrors:
    """One evaluation's scored utterances of one language, sorted by id: edit operations (substitutions +
    deletions + insertions) and reference phones of each."""

    ids: tuple[str, ...]
    edits: np.ndarray
    ref_phones: np.ndarray
    speakers: tuple[str, ...] = ()
    """Who spoke each utterance (aligned with ``ids``); empty = unknown: every utterance is its own speaker."""

    def speaker_groups(self) -> np.ndarray:
        """Speaker index (0..K-1, in order of first appearance) of every utterance."""
        names = self.speakers or self.ids
        index: dict[str, int] = {}
        return np.asarray([index.setdefault(n, len(index)) for n in names], dtype=np.int64)

    @property
    def per(self) -> float:
        """Pooled PER (jiwer's corpus-level error rate over these utterances)."""
        return float(self.edits.sum() / self.ref_phones.sum())


SpeakerMap = Mapping[tuple[str, str], str]
"""(lang, utterance id) -> speaker, read from the corpus (data/speakers.py)."""


def utterance_errors(rows: Iterable[dict], split: str, speakers: SpeakerMap | None = None) -> dict[str, UtteranceErrors]:
    """lang -> UtteranceErrors of the rows of ``split`` that the PER table scores (no ``error``, a non-empty
    reference); rows are inference outputs with id, lang, split, ref, hyp, error. With ``speakers``, every scored
    utterance must be in it (a test utterance of unknown speaker would silently flatten the bootstrap)."""
    by_lang: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        if r.get("split") != split or r.get("error") is not None or not (r.get("ref") or "").strip():
            continue
        by_lang.setdefault(r["lang"], []).append((r["id"], r["ref"], r.get("hyp") or ""))
    out = {}
    for lang, items in sorted(by_lang.items()):
        items.sort()
        aligned = jiwer.process_words([ref for _, ref, _ in items], [hyp for _, _, hyp in items])
        edits = [sum(c.ref_end_idx - c.ref_start_idx if c.type in ("substitute", "delete")
                     else c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else 0 for c in chunks)
                 for chunks in aligned.alignments]
        ids = tuple(i for i, _, _ in items)
        out[lang] = UtteranceErrors(ids, np.asarray(edits, dtype=np.int64),
                                    np.asarray([len(ref) for ref in aligned.references], dtype=np.int64),
                                    _speakers_of(speakers, lang, ids))
    return out


def _speakers_of(speakers: SpeakerMap | None, lang: str, ids: tuple[str, ...]) -> tuple[str, ...]:
    if speakers is None:
        return ()
    missing = [i for i in ids if (lang, i) not in speakers]
    if missing:
        raise ValueError(f"no speaker for {len(missing)} scored {lang!r} utterance(s) (e.g. {missing[0]!r}): the "
                         "speaker map must come from the corpus that was evaluated")
    return tuple(speakers[(lang, i)] for i in ids)


def read_utterance_errors(predictions: str | Path, speakers: SpeakerMap | None = None,
                          ) -> dict[str, dict[str, UtteranceErrors]]:
    """split -> utterance_errors of an evaluation's predictions.jsonl, splits sorted (as in the PER table)."""
    with open(predictions, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    by_split = {split: utterance_errors(rows, split, speakers)
                for split in sorted({r.get("split") for r in rows} - {None})}
    return {split: langs for split, langs in by_split.items() if langs}


@dataclass(frozen=True)
class Reduction:
    """Relative PER reduction of ``reference`` vs ``baseline`` (positive = the reference arm is better)."""

    reference: str
    baseline: str
    value: dict[str, float]
    """lang (and AVERAGE) -> reduction of the seed means."""
    low: dict[str, float]
    high: dict[str, float]
    """The CONFIDENCE bootstrap interval per lang (and AVERAGE)."""

    def verdict(self, lang: str = AVERAGE) -> str:
        """"better"/"worse" only when the interval excludes 0."""
        if self.low[lang] > 0:
            return "better"
        if self.high[lang] < 0:
            return "worse"
        return "within noise: the CI contains 0"


@dataclass(frozen=True)
class Aggregate:
    """PER of every (arm, seed, language) and what the table says about them."""

    arms: list[str]
    seeds: list[int]
    langs: list[str]
    """Target languages (sorted); columns of ``per`` are these, then AVERAGE."""
    per: np.ndarray
    """(arms, seeds, langs + 1): pooled PER per run and language, the last column the macro average."""
    utterances: dict[str, int]
    """Test utterances per language (the same for every run)."""
    reductions: list[Reduction]
    resamples: int
    speakers: dict[str, int | None]
    """Test speakers per language (None: unknown, every utterance counted as its own speaker)."""
    seeds_resampled: bool = True

    def _column(self, lang: str) -> int:
        return len(self.langs) if lang == AVERAGE else self.langs.index(lang)

    def mean(self, arm: str, lang: str = AVERAGE) -> float:
        return float(self.per[self.arms.index(arm), :, self._column(lang)].mean())

    def sd(self, arm: str, lang: str = AVERAGE) -> float:
        """Sample standard deviation over seeds (nan with one seed: it is not defined)."""
        if len(self.seeds) < 2:
            return float("nan")
        return float(self.per[self.arms.index(arm), :, self._column(lang)].std(ddof=1))

    def per_seed(self, arm: str, lang: str = AVERAGE) -> list[float]:
        """PER of every seed (in ``seeds`` order): what mean ± sd summarises."""
        return self.per[self.arms.index(arm), :, self._column(lang)].tolist()

    def resampled(self) -> str:
        """What the interval resampled, in words (for tables and notes)."""
        levels = ["seeds"] if self.seeds_resampled and len(self.seeds) > 1 else []
        if any(v is not None for v in self.speakers.values()):
            levels += ["test speakers", "utterances within a speaker"]
        else:
            levels += ["test utterances"]
        return ", then ".join(levels)


def _aligned(runs: dict[tuple[str, int], dict[str, UtteranceErrors]], arms: Sequence[str], seeds: Sequence[int],
             lang: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edits (arms, seeds, n), reference phones (n,), speaker index (n,)) of one language; every run must have
    scored the same utterances with the same references (they evaluate one test split), else the comparison is
    not paired."""
    first = runs[(arms[0], seeds[0])][lang]
    edits = np.empty((len(arms), len(seeds), len(first.ids)), dtype=np.int64)
    for a, arm in enumerate(arms):
        for s, seed in enumerate(seeds):
            got = runs[(arm, seed)].get(lang)
            if got is None or got.ids != first.ids or not np.array_equal(got.ref_phones, first.ref_phones):
                raise ValueError(f"arm {arm!r} seed {seed} scored other {lang!r} test utterances than arm "
                                 f"{arms[0]!r} seed {seeds[0]}: the paired bootstrap needs the same test set")
            edits[a, s] = got.edits
    return edits, first.ref_phones, first.speaker_groups()


def _counts(idx: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(resamples, n) bincount of each row of ``idx`` (resamples, m) (optionally weighted: 0 = not drawn)."""
    resamples = idx.shape[0]
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    w = None if weights is None else weights.ravel()
    return np.bincount(flat, weights=w, minlength=resamples * n).reshape(resamples, n).astype(np.int64)


def hierarchical_counts(rng: np.random.Generator, groups: np.ndarray, resamples: int) -> np.ndarray:
    """(resamples, n): how often each utterance is drawn when, per resample, K speakers are drawn with replacement
    from the K speakers (``groups``: speaker index of each utterance) and, for every drawn speaker, as many of that
    speaker's utterances as it has, with replacement. With one utterance per speaker this is the plain
    utterance bootstrap."""
    n = len(groups)
    order = np.argsort(groups, kind="stable")  # utterances grouped by speaker
    sizes = np.bincount(groups)
    k, widest = len(sizes), int(sizes.max())
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    drawn = rng.integers(0, k, size=(resamples, k))  # level 2: speakers
    u = rng.random((resamples, k, widest))  # level 3: a position inside each drawn speaker's utterances
    within = np.minimum((u * sizes[drawn][..., None]).astype(np.int64), sizes[drawn][..., None] - 1)
    used = np.arange(widest)[None, None, :] < sizes[drawn][..., None]  # a speaker contributes its own count
    pick = order[np.where(used, starts[drawn][..., None] + within, 0)]
    return _counts(pick.reshape(resamples, -1), n, used.reshape(resamples, -1).astype(np.int64))


def seed_weights(rng: np.random.Generator, seeds: int, resamples: int, *, resample: bool = True) -> np.ndarray:
    """(resamples, seeds): the share of each seed in each resample's seed average (level 1: seeds drawn with
    replacement; fixed equal shares when not resampled)."""
    if not resample or seeds == 1:
        return np.full((resamples, seeds), 1.0 / seeds)
    return _counts(rng.integers(0, seeds, size=(resamples, seeds)), seeds) / seeds


def aggregate(runs: dict[tuple[str, int], dict[str, UtteranceErrors]], arms: Sequence[str], seeds: Sequence[int],
              reference: str | None, *, resamples: int = RESAMPLES, rng_seed: int = BOOTSTRAP_SEED,
              resample_seeds: bool = True) -> Aggregate:
    """Mean ± sd over seeds and, when there is a reference arm and another arm, the reductions with their
    hierarchical bootstrap CIs. ``runs``: (arm, seed) -> lang -> UtteranceErrors of that run's test split.
    The draws, in this order from ``default_rng(rng_seed)``: the seed weights, then per language (sorted) its
    speakers and utterances (hierarchical_counts); the same draws serve every arm."""
    arms, seeds = list(arms), list(seeds)
    langs = sorted(runs[(arms[0], seeds[0])])
    for (arm, seed), scored in runs.items():
        if sorted(scored) != langs or not langs:
            raise ValueError(f"arm {arm!r} seed {seed} scored the languages {sorted(scored)}, arm {arms[0]!r} seed "
                             f"{seeds[0]} {langs}: every run must score the same, non-empty test set")
    rng = np.random.default_rng(rng_seed)
    weights = seed_weights(rng, len(seeds), resamples, resample=resample_seeds)
    per = np.empty((len(arms), len(seeds), len(langs) + 1))
    boot = np.empty((len(arms), resamples, len(langs) + 1))  # seed-weighted PER per resample
    sizes, speakers = {}, {}
    for j, lang in enumerate(langs):
        edits, refs, groups = _aligned(runs, arms, seeds, lang)
        sizes[lang] = len(refs)
        speakers[lang] = int(groups.max()) + 1 if runs[(arms[0], seeds[0])][lang].speakers else None
        per[:, :, j] = edits.sum(axis=2) / refs.sum()
        counts = hierarchical_counts(rng, groups, resamples)  # one draw per language, shared by every arm
        pooled = (edits @ counts.T) / (counts @ refs)  # (arms, seeds, resamples)
        boot[:, :, j] = np.einsum("asr,rs->ar", pooled, weights)
    per[:, :, -1] = per[:, :, :-1].mean(axis=2)
    boot[:, :, -1] = boot[:, :, :-1].mean(axis=2)
    return Aggregate(arms, seeds, langs, per, sizes, _reductions(arms, langs, per, boot, reference), resamples,
                     speakers, resample_seeds)


def _reductions(arms: list[str], langs: list[str], per: np.ndarray, boot: np.ndarray,
                reference: str | None) -> list[Reduction]:
    """The reference arm vs every other arm: point values of the seed means, percentile intervals of ``boot``."""
    if reference is None or len(arms) < 2:
        return []
    r, cols = arms.index(reference), [*langs, AVERAGE]
    tail = 100 * (1 - CONFIDENCE) / 2
    out = []
    for b, base in enumerate(arms):
        if b == r:
            continue
        point = _relative(per[b].mean(axis=0), per[r].mean(axis=0))
        low, high = np.percentile(_relative(boot[b], boot[r]), [tail, 100 - tail], axis=0)
        out.append(Reduction(reference, base, dict(zip(cols, point.tolist())), dict(zip(cols, low.tolist())),
                             dict(zip(cols, high.tolist()))))
    return out


def _relative(base: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(base - ref) / base elementwise; 0 where the baseline's PER is 0 (nothing left to reduce)."""
    safe = np.where(base > 0, base, 1.0)
    return np.where(base > 0, (base - ref) / safe, 0.0)
