"""How sure the experiment's comparison is: two sources of noise, reported separately.

- **Seeds** (initial weights, masks, negatives, batch order: ``experiment.seeds``): per arm and language the mean
  and the *sample* standard deviation (ddof 1) of PER over seeds; the average column is each seed's macro average
  over languages, then mean ± sd over seeds.
- **Test utterances** (which few sentences and speakers happened to be in the test split): the relative PER
  reduction of the reference arm vs every other arm, ``(PER_base - PER_ref) / PER_base``, with a 95% percentile
  bootstrap confidence interval. One resample draws, per language, that language's test utterances with
  replacement (stratified, so every language keeps its size and the macro average keeps its meaning); **the same
  resample serves every arm and every seed** (a paired comparison: the sentence difficulty cancels). In a
  resample, PER of a language is pooled like jiwer's corpus PER (sum of edits / sum of reference phones over the
  drawn utterances), then averaged over seeds, then macro-averaged over languages for the average.

Why average seeds inside each resample rather than resample (seed, utterance) pairs: the seeds score the *same*
utterances, so the pairs are not independent; treating 3 seeds x 150 utterances as 450 draws would narrow the
interval for nothing. The CI therefore answers "would another test set of this size change the verdict for these
trained models"; the seed spread (sd) answers "would another training run". Hand-written with numpy: scipy's
``bootstrap`` cannot stratify by language nor pair arms × seeds over one index, which is the whole point here.

Per-utterance edits come from the evaluation's ``predictions.jsonl`` (ref and hyp phone strings per utterance,
docs/evaluation.md) through jiwer's per-sentence alignments, the same alignment the PER table is computed from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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

    @property
    def per(self) -> float:
        """Pooled PER (jiwer's corpus-level error rate over these utterances)."""
        return float(self.edits.sum() / self.ref_phones.sum())


def utterance_errors(rows: Iterable[dict], split: str) -> dict[str, UtteranceErrors]:
    """lang -> UtteranceErrors of the rows of ``split`` that the PER table scores (no ``error``, a non-empty
    reference); rows are inference outputs with id, lang, split, ref, hyp, error."""
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
        out[lang] = UtteranceErrors(tuple(i for i, _, _ in items), np.asarray(edits, dtype=np.int64),
                                    np.asarray([len(ref) for ref in aligned.references], dtype=np.int64))
    return out


def read_utterance_errors(predictions: str | Path) -> dict[str, dict[str, UtteranceErrors]]:
    """split -> utterance_errors of an evaluation's predictions.jsonl, splits sorted (as in the PER table)."""
    with open(predictions, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    by_split = {split: utterance_errors(rows, split) for split in sorted({r.get("split") for r in rows} - {None})}
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

    def _column(self, lang: str) -> int:
        return len(self.langs) if lang == AVERAGE else self.langs.index(lang)

    def mean(self, arm: str, lang: str = AVERAGE) -> float:
        return float(self.per[self.arms.index(arm), :, self._column(lang)].mean())

    def sd(self, arm: str, lang: str = AVERAGE) -> float:
        """Sample standard deviation over seeds (nan with one seed: it is not defined)."""
        if len(self.seeds) < 2:
            return float("nan")
        return float(self.per[self.arms.index(arm), :, self._column(lang)].std(ddof=1))


def _aligned(runs: dict[tuple[str, int], dict[str, UtteranceErrors]], arms: Sequence[str], seeds: Sequence[int],
             lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(edits (arms, seeds, n), reference phones (n,)) of one language; every run must have scored the same
    utterances with the same references (they evaluate one test split), else the comparison is not paired."""
    first = runs[(arms[0], seeds[0])][lang]
    edits = np.empty((len(arms), len(seeds), len(first.ids)), dtype=np.int64)
    for a, arm in enumerate(arms):
        for s, seed in enumerate(seeds):
            got = runs[(arm, seed)].get(lang)
            if got is None or got.ids != first.ids or not np.array_equal(got.ref_phones, first.ref_phones):
                raise ValueError(f"arm {arm!r} seed {seed} scored other {lang!r} test utterances than arm "
                                 f"{arms[0]!r} seed {seeds[0]}: the paired bootstrap needs the same test set")
            edits[a, s] = got.edits
    return edits, first.ref_phones


def resample_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how often each of n utterances is drawn in each resample of n draws with replacement."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = idx + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n)


def aggregate(runs: dict[tuple[str, int], dict[str, UtteranceErrors]], arms: Sequence[str], seeds: Sequence[int],
              reference: str | None, *, resamples: int = RESAMPLES, rng_seed: int = BOOTSTRAP_SEED) -> Aggregate:
    """Mean ± sd over seeds and, when there is a reference arm and another arm, the reductions with their
    bootstrap CIs. ``runs``: (arm, seed) -> lang -> UtteranceErrors of that run's test split."""
    arms, seeds = list(arms), list(seeds)
    langs = sorted(runs[(arms[0], seeds[0])])
    for (arm, seed), scored in runs.items():
        if sorted(scored) != langs or not langs:
            raise ValueError(f"arm {arm!r} seed {seed} scored the languages {sorted(scored)}, arm {arms[0]!r} seed "
                             f"{seeds[0]} {langs}: every run must score the same, non-empty test set")
    rng = np.random.default_rng(rng_seed)
    per = np.empty((len(arms), len(seeds), len(langs) + 1))
    boot = np.empty((len(arms), resamples, len(langs) + 1))  # seed-averaged PER per resample
    sizes = {}
    for j, lang in enumerate(langs):
        edits, refs = _aligned(runs, arms, seeds, lang)
        sizes[lang] = len(refs)
        per[:, :, j] = edits.sum(axis=2) / refs.sum()
        counts = resample_counts(rng, len(refs), resamples)  # one draw per language, shared by arms and seeds
        boot[:, :, j] = ((edits @ counts.T) / (counts @ refs)).mean(axis=1)
    per[:, :, -1] = per[:, :, :-1].mean(axis=2)
    boot[:, :, -1] = boot[:, :, :-1].mean(axis=2)
    reductions = []
    if reference is not None and len(arms) > 1:
        r = arms.index(reference)
        tail = 100 * (1 - CONFIDENCE) / 2
        for b, base in enumerate(arms):
            if b == r:
                continue
            point = _relative(per[b].mean(axis=0), per[r].mean(axis=0))
            low, high = np.percentile(_relative(boot[b], boot[r]), [tail, 100 - tail], axis=0)
            cols = [*langs, AVERAGE]
            reductions.append(Reduction(reference, base, dict(zip(cols, point.tolist())),
                                        dict(zip(cols, low.tolist())), dict(zip(cols, high.tolist()))))
    return Aggregate(arms, seeds, langs, per, sizes, reductions, resamples)


def _relative(base: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(base - ref) / base elementwise; 0 where the baseline's PER is 0 (nothing left to reduce)."""
    safe = np.where(base > 0, base, 1.0)
    return np.where(base > 0, (base - ref) / safe, 0.0)
