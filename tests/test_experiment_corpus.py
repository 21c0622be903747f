"""The experiment's corpora (experiments/corpus.py, data/synthetic.py) and what each arm reads of them: unlabeled
target audio in pretraining (never from an evaluation speaker, never read by the supervised arm), several test
speakers, the shifted test split, and quickstart's corpus arguments unchanged (so its corpus is reused)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from evaluate_helpers import ROOT

from unispeech_platform.config import ConfigError, load_config
from unispeech_platform.data.synthetic import (
    PITCH_RANGE,
    SPEED_RANGE,
    VARIANTS,
    make_speakers,
    plan_jobs,
    synthesis_args,
    unlabeled_speakers,
)
from unispeech_platform.experiments.config import CorpusSpec, ExperimentConfig
from unispeech_platform.experiments.corpus import build_corpora, corpus_args

TINY = dict(high_resource=["es"], low_resource=["pt"], high_per_lang=12, low_per_lang=15, speakers=5,
            test_speakers=3, dev_speakers=1, unlabeled_per_lang=10, min_words=1, max_words=2,
            shifted_test={"enabled": True, "voices": ["klatt3", "Andy"]})
"""A few dozen utterances: 9 test rows (3 speakers) + their 9 shifted copies, 10 unlabeled pt rows."""


def _rows(corpus: Path, lang: str, split: str) -> list[dict]:
    parts = sorted((corpus / f"lang={lang}" / f"split={split}").glob("*.parquet"))
    return [r for p in parts for r in pq.read_table(p).to_pylist()]


def _speakers(summary: dict, lang: str) -> dict[str, dict]:
    return {s["id"]: s for s in summary["speakers"][lang]}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    import json

    spec = CorpusSpec(root=str(tmp_path_factory.mktemp("xl") / "corpus"), **TINY)
    built = build_corpora(spec, progress=False)
    summaries = {k: json.loads((Path(spec.root) / k / "summary.json").read_text()) for k in ("high", "low")}
    return spec, built, summaries


def test_quickstart_corpus_arguments_are_unchanged():
    """The demo's corpora are reused as they are: the arguments recorded in their summary.json (written before
    the unlabeled/shifted extras existed) are exactly what the presets give now."""
    old = {"generator": "espeak-ng/wordfreq v1", "speakers": 6, "dev_speakers": 1, "test_speakers": 1,
           "unlabeled_fraction": 0.0, "seed": 0, "min_words": 2, "max_words": 4}
    spec = load_config(ExperimentConfig, ROOT / "configs" / "quickstart.yaml").corpus
    high, low = corpus_args(spec)
    assert synthesis_args(**high) == {**old, "langs": ["es", "it"], "per_lang": 200}
    assert synthesis_args(**low) == {**old, "langs": ["pt", "fr"], "per_lang": 60}
    assert spec.describe() == ("synthetic espeak-ng, pretraining on ['es', 'it'] (200 utterances each, all labeled), "
                               "targets ['pt', 'fr'] (60 utterances each: 4 train speakers, 1 dev, 1 test), 2-4 words "
                               "per utterance")
    for preset in ("quickstart_tiny", "crosslingual_tiny"):  # the tests' shared tiny corpus
        spec = load_config(ExperimentConfig, ROOT / "configs" / f"{preset}.yaml").corpus
        tiny = {**old, "speakers": 4, "max_words": 3}
        assert [synthesis_args(**a) for a in corpus_args(spec)] == [
            {**tiny, "langs": ["es"], "per_lang": 30}, {**tiny, "langs": ["pt"], "per_lang": 20}]


@pytest.mark.parametrize("preset", ["crosslingual_cpu", "crosslingual_cpu_unlabeled", "crosslingual_gpu"])
def test_presets_test_at_least_three_speakers_and_fifty_utterances(preset):
    from unispeech_platform.experiments.runner import validate

    cfg = load_config(ExperimentConfig, ROOT / "configs" / f"{preset}.yaml")
    _, low = corpus_args(cfg.corpus)
    jobs = plan_jobs(synthesis_args(**low))
    for lang in cfg.corpus.low_resource:
        test = [j for j in jobs if j.speaker.lang == lang and j.speaker.split == "test"]
        assert len({j.speaker.id for j in test}) >= 3 and len(test) >= 50, (lang, len(test))
    stages = validate(cfg)
    assert all(s.evaluate.evaluate.splits == ["test", "test_shifted"] for s in stages)
    assert "3 test" in cfg.corpus.describe() and "test_shifted" in cfg.corpus.describe()
    # every arm: the same updates (a two-stage arm's two stages together) and batch budget
    budget = {(s.pretrain.train.max_steps + (s.continued.train.max_steps if s.continued else 0),
               s.pretrain.data.max_batch_size, s.pretrain.data.max_batch_seconds, s.pretrain.train.num_workers,
               s.finetune.train.max_steps) for s in stages}
    assert len(budget) == 1, budget
    supervised = {s.name: s.pretrain.data.labeled_only for s in stages}
    two_stage = dict.fromkeys(cfg.experiment.continued, True)  # stage 1 reads the labeled rows
    assert supervised == {"supervised": True, "self_supervised": False, "unispeech": False, **two_stage}


def test_an_arm_may_not_change_the_shared_budget():
    cfg = load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_cpu.yaml",
                      ["experiment.arms.unispeech={model.ctc_weight: 0.5, train.max_steps: 2000}"])
    from unispeech_platform.experiments.runner import validate

    with pytest.raises(ConfigError, match=r"arms.unispeech sets \['train.max_steps'\]"):
        validate(cfg)


@pytest.mark.parametrize("bad, match", [
    ({"speakers": 4, "test_speakers": 3, "dev_speakers": 1}, "cannot cover"),
    ({"shifted_test": {"enabled": True, "voices": ["m1", "klatt3"]}}, "training voices"),
    ({"shifted_test": {"enabled": True, "speed": [180, 220]}}, "overlaps the training range"),
    ({"unlabeled_langs": ["sv"]}, "needs unlabeled_per_lang"),
    ({"unlabeled_per_lang": 5, "unlabeled_langs": ["es"]}, "already pretraining or target"),
])
def test_corpus_spec_rejects_inconsistent_settings(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ExperimentConfig, ROOT / "configs" / "quickstart.yaml", [f"corpus.{k}={v}" for k, v in bad.items()])


def test_unlabeled_voices_exclude_the_evaluation_speakers():
    """Pure: for every language and seed the unlabeled voices are the others, so speaker k's voice, rate and pitch
    do not depend on how many speakers a corpus has."""
    for lang in ("pt", "fr", "nl"):
        for seed in (0, 1):
            held = make_speakers(lang, 8, 1, 3, seed)
            unl = unlabeled_speakers(lang, 4, seed)
            assert len(unl) == len(VARIANTS) - 4
            evaluation = {(s.voice, s.speed, s.pitch) for s in held if s.split != "train"}
            assert not evaluation & {(s.voice, s.speed, s.pitch) for s in unl}
            train = {(s.voice, s.speed, s.pitch) for s in held if s.split == "train"}
            assert train <= {(s.voice, s.speed, s.pitch) for s in unl}


def test_unlabeled_target_rows_join_pretraining(corpora):
    spec, built, summaries = corpora
    rows = _rows(built.high, "pt", "train")
    assert len(rows) == 10 and all(r["phones"] is None for r in rows)
    low = _speakers(summaries["low"], "pt")
    evaluation = {s["id"] for s in low.values() if s["split"] in ("dev", "test")}
    assert evaluation and not evaluation & {r["speaker"] for r in rows}
    voices = {(s["voice"], s["speed"], s["pitch"]) for s in low.values() if s["split"] in ("dev", "test")}
    high = _speakers(summaries["high"], "pt")
    assert not voices & {(high[r["speaker"]]["voice"], high[r["speaker"]]["speed"], high[r["speaker"]]["pitch"])
                         for r in rows}
    assert not (built.high / "lang=pt" / "split=test").exists()  # the targets' evaluation rows stay in low/
    assert all(r["phones"] for r in _rows(built.high, "es", "train"))
    # the pretraining corpus' vocabulary is its labeled rows' phones: unlabeled audio adds none
    from unispeech_core import PhoneTokenizer

    es = {p for split in ("train", "dev", "test") for r in _rows(built.high, "es", split) for p in r["phones"].split()}
    assert set(PhoneTokenizer.from_file(built.high / "vocab.json").phones) == es


def test_three_test_speakers_and_the_shifted_split(corpora):
    spec, built, summaries = corpora
    test, shifted = _rows(built.low, "pt", "test"), _rows(built.low, "pt", "test_shifted")
    assert len({r["speaker"] for r in test}) == 3 and len(test) == 9
    assert sorted(r["id"] for r in shifted) == sorted(f"{r['id']}-shifted" for r in test)
    by_id = {r["id"]: r for r in test}
    assert all(by_id[r["id"].removesuffix("-shifted")]["text"] == r["text"] for r in shifted)  # same texts
    assert all(by_id[r["id"].removesuffix("-shifted")]["phones"] == r["phones"] for r in shifted)
    speakers = _speakers(summaries["low"], "pt")
    used = [speakers[r["speaker"]] for r in shifted]
    assert {s["voice"] for s in used} == {"pt+klatt3", "pt+Andy"}
    for s in used:
        assert s["split"] == "test_shifted"
        assert spec.shifted_test.speed[0] <= s["speed"] < spec.shifted_test.speed[1] and s["speed"] >= SPEED_RANGE[1]
        assert spec.shifted_test.pitch[0] <= s["pitch"] < spec.shifted_test.pitch[1] and s["pitch"] >= PITCH_RANGE[1]

    def high_band_share(rows: list[dict]) -> float:
        """Share of the energy above 4.2 kHz (a telephone channel keeps almost none)."""
        wave = np.concatenate([sf.read(io.BytesIO(r["audio"]), dtype="float32")[0] for r in rows])
        power = np.abs(np.fft.rfft(wave)) ** 2
        freqs = np.fft.rfftfreq(len(wave), 1 / 16000)
        return float(power[freqs > 4200].sum() / power.sum())

    clean, telephone = high_band_share(test), high_band_share(shifted)
    assert telephone < 0.002 and clean > 5 * telephone, (clean, telephone)
    assert all(by_id[r["id"].removesuffix("-shifted")]["audio"] != r["audio"] for r in shifted)


def test_rebuilding_reuses_the_corpus(corpora):
    spec, built, _ = corpora
    stamp = {p: p.stat().st_mtime_ns for p in built.low.rglob("*.parquet")}
    build_corpora(spec, progress=False)
    assert stamp == {p: p.stat().st_mtime_ns for p in built.low.rglob("*.parquet")}


def _arm_data(spec: CorpusSpec, tmp: Path):
    """Each arm's pretraining DataConfig as stages.py builds it from the unlabeled preset on the tiny corpus."""
    from unispeech_platform.experiments.runner import validate

    sets = [f"corpus.{k}={v}" for k, v in {**TINY, "root": spec.root}.items()]
    cfg = load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_cpu_unlabeled.yaml",
                      [*sets, f"experiment.storage_path={tmp}"])
    return {s.name: s.pretrain.data for s in validate(cfg)}


def _epoch_rows(stream) -> list[tuple[str, str, bool]]:
    return [(i, lang, bool(lab)) for b in stream for i, lang, lab in zip(b["id"], b["lang"], b["labeled"], strict=True)]


def test_only_contrastive_arms_read_unlabeled_rows(corpora, tmp_path):
    """The real pipeline (Ray Data read, the labeled_only filter, decode, batching) over the tiny corpus with each
    arm's DataConfig: the supervised arm gets no unlabeled row, the UniSpeech and self-supervised arms get them."""
    from train_helpers import local_ray

    from unispeech_platform.data.pipeline import build_dataset, iter_batches, iter_local_batches

    spec, built, _ = corpora
    data = _arm_data(spec, tmp_path)
    assert data["supervised"].labeled_only and not data["unispeech"].labeled_only
    local = {arm: _epoch_rows(iter_local_batches(cfg, cfg.train_splits, train=True)) for arm, cfg in data.items()}
    with local_ray(num_cpus=4):
        ray_rows = {arm: _epoch_rows(iter_batches(build_dataset(cfg, cfg.train_splits), cfg, epoch=0, train=True))
                    for arm, cfg in data.items()}
    for rows in (local, ray_rows):
        assert rows["supervised"] and all(lab for _, _, lab in rows["supervised"])
        assert not {lang for _, lang, _ in rows["supervised"]} & {"pt"}
        for arm in ("unispeech", "self_supervised"):
            unlabeled = {i for i, lang, lab in rows[arm] if not lab}
            assert len(unlabeled) == 10 and all(i.startswith("pt-u") for i in unlabeled), arm
            assert {i for i, _, lab in rows[arm] if lab} == {i for i, _, _ in rows["supervised"]}


def test_an_unknown_shifted_voice_is_named_before_synthesis(tmp_path):
    """espeak-ng speaks an unknown variant in its default voice without a word (exit 0): a typo would silently
    shift nothing, so the corpus build names it first."""
    from unispeech_platform.data.synthetic import ShiftedCondition, make_corpus

    with pytest.raises(ValueError, match=r"shifted.voices \['Klat3'\]: espeak-ng has no such variant"):
        make_corpus(tmp_path / "c", ["pt"], 8, speakers=3, shifted=ShiftedCondition(voices=("Klat3", "Andy")),
                    progress=False)
    assert not list((tmp_path / "c").glob("lang=*"))
