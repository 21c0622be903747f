"""(No Ray) The experiment's statistics and its results block: every seed is a different run (stage configs, initial
weights, batch order), the aggregate (mean ± sd over seeds, relative reductions, the paired bootstrap CI over test
utterances) equals a hand computation on fixed inputs, per-utterance edits add up to the PER table, and the
generated block in the results file replaces only itself."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from evaluate_helpers import ROOT

from unispeech_platform.experiments.statistics import AVERAGE, UtteranceErrors, aggregate, utterance_errors


def _cfg(*sets: str):
    from unispeech_platform.config import load_config
    from unispeech_platform.experiments.config import ExperimentConfig

    return load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_tiny.yaml", list(sets))


# --- seeds -------------------------------------------------------------------------------------------------


def test_every_seed_is_its_own_run_of_every_arm():
    from unispeech_platform.experiments.runner import validate

    cfg = _cfg("experiment.seeds=[0, 1, 2]")
    stages = validate(cfg)
    assert len(stages) == 9
    names = set()
    for st in stages:
        seed = st.pretrain.train.seed
        assert (st.pretrain.data.seed, st.finetune.train.seed, st.finetune.data.seed) == (seed, seed, seed)
        label = f"{st.name}-s{seed}"
        assert st.pretrain.checkpoint.name == f"{label}-pretrain" and st.finetune.checkpoint.name == f"{label}-finetune"
        assert st.pretrain.tracking.run_name == f"{label}/pretrain"
        assert st.evaluate.evaluate.output_dir.endswith(f"{label}-eval")
        assert st.evaluate.evaluate.model_path.endswith(f"{label}-finetune")
        names |= {st.pretrain.checkpoint.name, st.finetune.checkpoint.name, st.evaluate.evaluate.output_dir}
        assert st.pretrain.data.path == stages[0].pretrain.data.path  # the corpus is the same for every seed
    assert len(names) == 27
    # One seed (the quickstart's default): the names stay <arm>-pretrain, ..., as before seeds existed.
    single = validate(_cfg())
    assert [s.pretrain.checkpoint.name for s in single] == [f"{a}-pretrain" for a in cfg.experiment.arms]


@pytest.mark.parametrize("bad, key", [
    ("pretrain.overrides={train.seed: 3}", "pretrain.overrides: train.seed"),
    ("finetune.overrides={data: {seed: 3}}", "finetune.overrides: data.seed"),
    ("experiment.arms={a: {train.seed: 1}}", "experiment.arms.a: train.seed"),
])
def test_a_seed_override_would_make_seeds_equal_and_is_refused(bad, key):
    from unispeech_platform.config import ConfigError
    from unispeech_platform.experiments.runner import validate

    with pytest.raises(ConfigError, match=key):
        validate(_cfg("experiment.seeds=[0, 1]", bad, "experiment.reference_arm=null"))


def test_seeds_must_be_distinct():
    from unispeech_platform.config import ConfigError

    with pytest.raises(ConfigError, match="experiment.seeds"):
        _cfg("experiment.seeds=[1, 1]")


def test_two_seeds_give_different_initial_weights_and_batch_order():
    """What train.seed and data.seed drive, built from the seeded stage configs the way the train loop does
    (torch.manual_seed(train.seed) before build_model; BatchStream's jitter and shuffle from data.seed)."""
    import pyarrow as pa
    import torch

    from unispeech_platform.data.batching import BatchStream
    from unispeech_platform.data.decode import DECODED_SCHEMA
    from unispeech_platform.experiments.runner import validate
    from unispeech_platform.train.tasks import task_for_job

    stages = [s for s in validate(_cfg("experiment.seeds=[0, 1]")) if s.name == "unispeech"]
    assert [s.pretrain.train.seed for s in stages] == [0, 1]

    def weights(job):
        torch.manual_seed(job.train.seed)
        model = task_for_job(job, None).build_model()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def order(job):
        lengths = [8000 + 500 * ((7 * i) % 40) for i in range(40)]
        cols = {"id": [f"u{i:02d}" for i in range(40)], "lang": ["es"] * 40,
                "wave": [np.zeros(n, "<f4").tobytes() for n in lengths], "num_samples": lengths,
                "labels": [[1, 2, 3]] * 40, "rate": [1.0] * 40}
        block = pa.table({k: cols.get(k, [None] * 40) for k in DECODED_SCHEMA.names}, schema=DECODED_SCHEMA)
        return [tuple(b["id"]) for b in BatchStream([block], job.data, epoch=0, train=True)]

    w0, w1 = weights(stages[0].pretrain), weights(stages[1].pretrain)
    assert torch.equal(w0, weights(stages[0].pretrain)) and not torch.equal(w0, w1)
    o0, o1 = order(stages[0].pretrain), order(stages[1].pretrain)
    assert o0 == order(stages[0].pretrain) and o0 != o1
    assert sorted(i for b in o0 for i in b) == sorted(i for b in o1 for i in b)  # the same rows, another order
    assert order(stages[0].finetune) != order(stages[1].finetune)


# --- per-utterance edits -----------------------------------------------------------------------------------


def test_utterance_edits_add_up_to_the_per_table(tmp_path):
    import pandas as pd

    from unispeech_platform.evaluate.scoring import score_per
    from unispeech_platform.experiments.statistics import read_utterance_errors

    rows = [
        {"id": "pt-2", "lang": "pt", "split": "test", "ref": "a b c", "hyp": "a x c d", "error": None},  # 1 sub 1 ins
        {"id": "pt-1", "lang": "pt", "split": "test", "ref": "a b", "hyp": "", "error": None},  # 2 deletions
        {"id": "pt-3", "lang": "pt", "split": "test", "ref": None, "hyp": None, "error": "too_short"},  # not scored
        {"id": "fr-1", "lang": "fr", "split": "test", "ref": "o u i", "hyp": "o u i", "error": None},
        {"id": "fr-2", "lang": "fr", "split": "test", "ref": "n o", "hyp": "m", "error": None},  # 1 sub 1 del
        {"id": "fr-9", "lang": "fr", "split": "dev", "ref": "x", "hyp": "y", "error": None},  # another split
    ]
    got = utterance_errors(rows, "test")
    assert got["pt"].ids == ("pt-1", "pt-2") and got["pt"].edits.tolist() == [2, 2]
    assert got["pt"].ref_phones.tolist() == [2, 3]
    assert got["fr"].ids == ("fr-1", "fr-2") and got["fr"].edits.tolist() == [0, 2]
    scores = {s.lang: s.per for s in score_per(pd.DataFrame(rows)) if s.split == "test"}
    assert got["pt"].per == pytest.approx(scores["pt"]) == pytest.approx(4 / 5)
    assert got["fr"].per == pytest.approx(scores["fr"]) == pytest.approx(2 / 5)
    pd.DataFrame(rows).to_json(tmp_path / "predictions.jsonl", orient="records", lines=True)  # as evaluate writes it
    read = read_utterance_errors(tmp_path / "predictions.jsonl")
    assert list(read) == ["dev", "test"] and read["dev"]["fr"].edits.tolist() == [1]
    assert {lang: e.edits.tolist() for lang, e in read["test"].items()} == {"fr": [0, 2], "pt": [2, 2]}


# --- the aggregate -----------------------------------------------------------------------------------------

REFS = {"fr": [3, 5, 2, 4], "pt": [6, 2, 3]}
EDITS = {  # (arm, seed) -> lang -> edits per utterance (an utterance may have more edits than phones: insertions)
    ("base", 0): {"fr": [2, 3, 1, 2], "pt": [4, 1, 2]},
    ("base", 1): {"fr": [1, 4, 2, 2], "pt": [7, 2, 1]},
    ("ref", 0): {"fr": [1, 2, 0, 2], "pt": [2, 1, 1]},
    ("ref", 1): {"fr": [2, 1, 4, 1], "pt": [3, 0, 2]},
}


def _runs(edits=EDITS) -> dict:
    return {key: {lang: UtteranceErrors(tuple(f"{lang}{i}" for i in range(len(e))), np.array(e), np.array(REFS[lang]))
                  for lang, e in langs.items()} for key, langs in edits.items()}


def _hand_per(arm: str, seed: int, lang: str, pick=None) -> float:
    pick = pick if pick is not None else range(len(REFS[lang]))
    return sum(EDITS[(arm, seed)][lang][i] for i in pick) / sum(REFS[lang][i] for i in pick)


def test_mean_sd_and_reduction_equal_a_hand_computation():
    agg = aggregate(_runs(), ["base", "ref"], [0, 1], "ref", resamples=50)
    for arm in ("base", "ref"):
        for lang in ("fr", "pt"):
            values = [_hand_per(arm, s, lang) for s in (0, 1)]
            assert values[0] != values[1]
            assert agg.mean(arm, lang) == pytest.approx(statistics.mean(values))
            assert agg.sd(arm, lang) == pytest.approx(statistics.stdev(values))  # sample sd (n - 1)
        macro = [(_hand_per(arm, s, "fr") + _hand_per(arm, s, "pt")) / 2 for s in (0, 1)]
        assert agg.mean(arm) == pytest.approx(statistics.mean(macro))
        assert agg.sd(arm) == pytest.approx(statistics.stdev(macro))
    (red,) = agg.reductions
    assert (red.reference, red.baseline) == ("ref", "base")
    base, ref = agg.mean("base"), agg.mean("ref")
    assert red.value[AVERAGE] == pytest.approx((base - ref) / base)
    assert red.value["pt"] == pytest.approx((agg.mean("base", "pt") - agg.mean("ref", "pt")) / agg.mean("base", "pt"))
    assert agg.utterances == {"fr": 4, "pt": 3}


SPEAKERS = {"fr": ("a", "a", "b", "c"), "pt": ("d", "e", "d")}


def _speaker_runs(edits=EDITS) -> dict:
    return {key: {lang: UtteranceErrors(tuple(f"{lang}{i}" for i in range(len(e))), np.array(e),
                                        np.array(REFS[lang]), SPEAKERS[lang])
                  for lang, e in langs.items()} for key, langs in edits.items()}


def test_hierarchical_draws_keep_speakers_whole():
    """Every resample draws K speakers with replacement and, per drawn speaker, exactly as many of its own
    utterances as it has: an utterance is drawn only with its speaker."""
    from unispeech_platform.experiments.statistics import hierarchical_counts

    groups = np.array([0, 0, 1, 2, 2, 2])
    counts = hierarchical_counts(np.random.default_rng(3), groups, 500)
    sizes = np.bincount(groups)
    per_speaker = np.stack([counts[:, groups == g].sum(axis=1) for g in range(3)], axis=1)  # (resamples, K)
    assert np.all(per_speaker % sizes == 0)  # whole multiples of the speaker's size
    assert np.all((per_speaker // sizes).sum(axis=1) == 3)  # K speakers drawn per resample
    assert np.all(counts >= 0) and counts[:, 3:].sum() > 0 and (counts[:, :2].sum(axis=1) == 0).any()
    one_each = hierarchical_counts(np.random.default_rng(3), np.arange(5), 200)
    assert np.all(one_each.sum(axis=1) == 5)  # one utterance per speaker: the plain utterance bootstrap


def test_bootstrap_ci_equals_a_hand_rolled_loop():
    """The documented protocol, one resample at a time in plain Python over the same draws: seeds drawn with
    replacement, then per language (sorted) speakers and their utterances; pool edits / ref phones per drawn seed
    over the drawn utterances (with multiplicity), average over the drawn seeds, macro-average over languages;
    reduction per resample; percentiles."""
    from unispeech_platform.experiments.statistics import hierarchical_counts, seed_weights

    resamples, rng_seed = 200, 7
    agg = aggregate(_speaker_runs(), ["base", "ref"], [0, 1], "ref", resamples=resamples, rng_seed=rng_seed)
    rng = np.random.default_rng(rng_seed)
    weights = seed_weights(rng, 2, resamples)
    draws = {lang: hierarchical_counts(rng, _speaker_runs()[("base", 0)][lang].speaker_groups(), resamples)
             for lang in ("fr", "pt")}
    per_lang = {lang: [] for lang in ("fr", "pt")}
    average = []
    for b in range(resamples):
        seeds = [s for s in (0, 1) for _ in range(round(weights[b, s] * 2))]  # the drawn seeds, with repeats
        assert len(seeds) == 2
        by_arm = {}
        for arm in ("base", "ref"):
            by_arm[arm] = {}
            for lang in ("fr", "pt"):
                pick = [i for i, c in enumerate(draws[lang][b]) for _ in range(c)]
                by_arm[arm][lang] = statistics.mean(_hand_per(arm, s, lang, pick) for s in seeds)
        for lang in ("fr", "pt"):
            per_lang[lang].append((by_arm["base"][lang] - by_arm["ref"][lang]) / by_arm["base"][lang])
        base, ref = (statistics.mean(by_arm[a].values()) for a in ("base", "ref"))
        average.append((base - ref) / base)
    (red,) = agg.reductions
    for lang, values in [*per_lang.items(), (AVERAGE, average)]:
        low, high = np.percentile(values, [2.5, 97.5])
        assert (red.low[lang], red.high[lang]) == (pytest.approx(low), pytest.approx(high)), lang
    assert red.low[AVERAGE] <= red.value[AVERAGE] <= red.high[AVERAGE]
    assert agg.speakers == {"fr": 3, "pt": 2}
    assert agg.resampled() == "seeds, then test speakers, then utterances within a speaker"


def test_seed_spread_widens_the_interval_and_withholds_the_verdict():
    """The reference arm wins clearly in two seeds and loses badly in the third: over test utterances of these
    fixed models it is "better", over seeds it is not (the case the old utterance-only bootstrap got wrong)."""
    n = 40
    refs = {"fr": [10] * n}
    wins = {"fr": [2] * n}
    edits = {("base", 0): {"fr": [5] * n}, ("base", 1): {"fr": [5] * n}, ("base", 2): {"fr": [5] * n},
             ("ref", 0): wins, ("ref", 1): wins, ("ref", 2): {"fr": [9] * n}}
    runs = {k: {"fr": UtteranceErrors(tuple(f"u{i}" for i in range(n)), np.array(v["fr"]) + np.arange(n) % 2,
                                      np.array(refs["fr"]))} for k, v in edits.items()}
    fixed = aggregate(runs, ["base", "ref"], [0, 1, 2], "ref", resamples=400, resample_seeds=False)
    nested = aggregate(runs, ["base", "ref"], [0, 1, 2], "ref", resamples=400)
    (f,), (h,) = fixed.reductions, nested.reductions
    assert f.value[AVERAGE] == pytest.approx(h.value[AVERAGE]) and f.value[AVERAGE] > 0
    assert f.verdict() == "better" and h.verdict().startswith("within noise")
    assert h.high[AVERAGE] - h.low[AVERAGE] > 5 * (f.high[AVERAGE] - f.low[AVERAGE])
    assert fixed.resampled() == "test utterances" and nested.resampled() == "seeds, then test utterances"
    assert nested.per_seed("ref") == pytest.approx([0.25, 0.25, 0.95])


def test_a_scored_utterance_without_a_speaker_is_refused():
    rows = [{"id": "u1", "lang": "fr", "split": "test", "ref": "a b", "hyp": "a", "error": None},
            {"id": "u2", "lang": "fr", "split": "test", "ref": "a", "hyp": "a", "error": None}]
    got = utterance_errors(rows, "test", {("fr", "u1"): "s1", ("fr", "u2"): "s1"})
    assert got["fr"].speakers == ("s1", "s1") and got["fr"].speaker_groups().tolist() == [0, 0]
    with pytest.raises(ValueError, match="no speaker for 1 scored 'fr' utterance"):
        utterance_errors(rows, "test", {("fr", "u1"): "s1"})


def test_corpus_speakers_reads_the_split_of_every_language(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from unispeech_platform.data.speakers import corpus_speakers

    for lang, split, ids, speakers in [("fr", "test", ["f1", "f2"], ["x", None]), ("pt", "test", ["p1"], ["y"]),
                                       ("fr", "train", ["t1"], ["z"])]:
        d = tmp_path / f"lang={lang}" / f"split={split}"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"id": ids, "speaker": pa.array(speakers, pa.string())}), d / "part-00000.parquet")
    assert corpus_speakers(str(tmp_path), ["test"]) == {("fr", "f1"): "x", ("fr", "f2"): "utterance:f2",
                                                        ("pt", "p1"): "y"}


def test_bootstrap_known_values():
    """Identical arms: reduction 0 with a zero-width CI; a reference without errors: +100% in every resample."""
    same = {("a", s): EDITS[("base", s)] for s in (0, 1)} | {("b", s): EDITS[("base", s)] for s in (0, 1)}
    (red,) = aggregate(_runs(same), ["a", "b"], [0, 1], "b", resamples=100).reductions
    assert red.value[AVERAGE] == red.low[AVERAGE] == red.high[AVERAGE] == 0 and red.verdict().startswith("within")
    perfect = {**{k: v for k, v in EDITS.items() if k[0] == "base"},
               **{("ref", s): {lang: [0] * len(REFS[lang]) for lang in REFS} for s in (0, 1)}}
    (red,) = aggregate(_runs(perfect), ["base", "ref"], [0, 1], "ref", resamples=100).reductions
    assert red.value[AVERAGE] == red.low[AVERAGE] == red.high[AVERAGE] == pytest.approx(1.0)
    assert red.verdict() == "better"


def test_different_test_sets_are_refused():
    runs = _runs()
    runs[("ref", 1)]["pt"] = UtteranceErrors(("x0", "x1", "x2"), np.array([1, 1, 1]), np.array(REFS["pt"]))
    with pytest.raises(ValueError, match="arm 'ref' seed 1 scored other 'pt' test utterances"):
        aggregate(runs, ["base", "ref"], [0, 1], "ref")


def test_table_metrics_and_single_seed():
    from unispeech_platform.experiments.report import (
        ArmResult,
        aggregate_results,
        parent_metrics,
        results_table,
        results_tables,
    )

    shifted = _runs({k: {lang: [min(e + 1, r) for e, r in zip(v, REFS[lang])] for lang, v in langs.items()}
                     for k, langs in EDITS.items()})
    results = [ArmResult(arm, [], seed=s, utterances={"test": _runs()[(arm, s)], "test_shifted": shifted[(arm, s)]})
               for s in (0, 1) for arm in ("base", "ref")]
    aggs = aggregate_results(results, "ref")
    assert list(aggs) == ["test", "test_shifted"]
    agg = aggs["test"]
    assert agg.mean("ref", "fr") == pytest.approx(statistics.mean(_hand_per("ref", s, "fr") for s in (0, 1)))
    table = results_table(agg)
    assert "| arm | fr | pt | avg |" in table
    cell = f"{100 * agg.mean('ref', 'fr'):.1f} ± {100 * agg.sd('ref', 'fr'):.1f}"
    assert f"| ref | {cell} |" in table
    seeds = " / ".join(f"{100 * v:.1f}" for v in agg.per_seed("ref"))
    assert "| avg per seed 0 / 1 |" in table and table.splitlines()[3].endswith(f"| {seeds} |")
    red = agg.reductions[0]
    assert (f"- ref vs base: {100 * red.value[AVERAGE]:+.1f}% relative PER reduction on the average (95% CI "
            f"{100 * red.low[AVERAGE]:+.1f}% … {100 * red.high[AVERAGE]:+.1f}%, hierarchical bootstrap over 7 test "
            "utterances × 2 seeds, resampling seeds, then test utterances;") in table
    both = results_tables(aggs)
    assert both.startswith(table) and "PER % on the `test_shifted` split" in both
    metrics = parent_metrics(aggs)
    assert metrics["per/ref/avg"] == pytest.approx(agg.mean("ref")) and metrics["per_sd/base/pt"] == agg.sd("base", "pt")
    assert metrics["per/ref/avg/test_shifted"] == pytest.approx(aggs["test_shifted"].mean("ref"))
    assert metrics["per/ref/avg/test_shifted"] > metrics["per/ref/avg"]
    assert metrics["rel_reduction/vs_base"] == red.value[AVERAGE]
    assert metrics["rel_reduction_ci_low/vs_base"] <= metrics["rel_reduction_ci_high/vs_base"]
    # one arm, one seed (the quickstart): per/<lang> as before, no sd, no reductions
    one = aggregate_results([ArmResult("ref", [], utterances={"test": _runs()[("ref", 0)]})], "ref")
    assert parent_metrics(one) == {"per/fr": pytest.approx(_hand_per("ref", 0, "fr")),
                                   "per/pt": pytest.approx(_hand_per("ref", 0, "pt")),
                                   "per/avg": pytest.approx(one["test"].mean("ref"))}
    assert "±" not in results_tables(one) and "relative PER reduction" not in results_tables(one)


# --- the results block -------------------------------------------------------------------------------------


def test_the_block_replaces_only_itself(tmp_path):
    from unispeech_platform.experiments.results_block import begin_marker, end_marker, write_results_block

    path = tmp_path / "results.md"
    before = "# Results\r\n\r\nHand-written intro, CRLF line ends. \N{EM DASH}\n\n"
    other = f"{begin_marker('other')}\nother block\n{end_marker('other')}\n"
    after = "\n## Reading\n\nThe analysis, no trailing newline"
    block = f"{begin_marker('exp')}\nold table\n{end_marker('exp')}"
    path.write_bytes((before + other + block + after).encode())
    write_results_block(path, "exp", "## new\n\n| a |\n")
    text = path.read_bytes().decode()
    assert text == before + other + f"{begin_marker('exp')}\n## new\n\n| a |\n{end_marker('exp')}" + after
    write_results_block(path, "exp", "second")  # replaced again, not duplicated
    assert path.read_bytes().decode() == before + other + f"{begin_marker('exp')}\nsecond\n{end_marker('exp')}" + after
    write_results_block(path, "new", "appended")  # no markers for it yet: appended, the rest unchanged
    text = path.read_bytes().decode()
    assert text == (before + other + f"{begin_marker('exp')}\nsecond\n{end_marker('exp')}" + after
                    + f"\n\n{begin_marker('new')}\nappended\n{end_marker('new')}\n")
    write_results_block(tmp_path / "sub" / "fresh.md", "exp", "x")  # a missing file is created
    assert (tmp_path / "sub" / "fresh.md").read_text() == f"{begin_marker('exp')}\nx\n{end_marker('exp')}\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_docs_results_md_round_trips_byte_for_byte(tmp_path):
    """The shipped docs/results.md: writing its own block back changes no byte; a new block changes only it."""
    from unispeech_platform.experiments.results_block import begin_marker, end_marker, write_results_block

    original = (ROOT / "docs" / "results.md").read_bytes()
    text = original.decode()
    start = text.index(begin_marker("crosslingual-cpu")) + len(begin_marker("crosslingual-cpu")) + 1
    end = text.index(end_marker("crosslingual-cpu"))
    copy = tmp_path / "results.md"
    copy.write_bytes(original)
    write_results_block(copy, "crosslingual-cpu", text[start:end])
    assert copy.read_bytes() == original
    write_results_block(copy, "crosslingual-cpu", "## Cross-lingual results: new\n")
    new = copy.read_bytes().decode()
    assert new.startswith(text[:start]) and new.endswith(text[end:]) and "Reading the numbers honestly" in new


@pytest.mark.parametrize("content", [
    "<!-- BEGIN GENERATED: exp -->\nno end\n",
    "<!-- END GENERATED: exp -->\n<!-- BEGIN GENERATED: exp -->\n",
    "<!-- BEGIN GENERATED: exp -->\n<!-- END GENERATED: exp -->\n" * 2,
])
def test_broken_markers_are_refused_before_any_work(tmp_path, capsys, content):
    from experiment_helpers import tiny_args

    from jobs import crosslingual
    from unispeech_platform.experiments.results_block import ResultsFileError, write_results_block

    path = tmp_path / "results.md"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match="results.md: expected one"):
        write_results_block(path, "exp", "x")
    assert path.read_text() == content
    with pytest.raises(SystemExit) as e:
        crosslingual.main([*tiny_args("configs/crosslingual_tiny.yaml", tmp_path / "base"),
                           "--set", f"experiment.results_path={path}", "--set", "experiment.name=exp"])
    assert e.value.code == 3 and "expected one '<!-- BEGIN GENERATED: exp -->'" in capsys.readouterr().err
    assert not (tmp_path / "base" / "runs").exists() and not (tmp_path / "base" / "corpus").exists()
