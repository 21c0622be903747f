"""The per-seed pretraining health row of the experiment report (experiments/pretrain_health.py): computed from
hand-made histories, and read back from a real MLflow store as a training job writes it."""

from __future__ import annotations

import math

import pytest

from unispeech_platform.experiments.pretrain_health import health_table, read_health, summarize

CHANCE = math.log(21)


def _history(points: dict[str, list[tuple[int, float]]]):
    return lambda key: list(points.get(key, []))


def test_a_seed_that_leaves_chance_is_dated_by_the_update_from_which_it_stays_below_nine_tenths_of_chance():
    losses = [(25, 3.04), (50, 3.04), (75, 2.80), (100, 2.76), (125, 2.60), (150, 2.75), (200, 2.50)]
    history = _history({"contrastive_loss": losses, "loss": losses, "contrastive_accuracy": [(200, 0.31)],
                        "cos_pos_neg": [(200, 0.42)],
                        "code_perplexity": [(s, float(s) / 10) for s, _ in losses]})
    tags = {"health/collinear_targets": "update 50: targets collinear: ...", "health/stopped_on": "x",
            "mlflow.runName": "unispeech-s0/pretrain"}
    h = summarize(history, tags, num_negatives=20)
    assert h.chance == pytest.approx(CHANCE)
    assert h.first_below == 200  # 0.9·ln 21 = 2.740: below at 125, above again at 150 (2.75), below from 200 on
    assert h.contrastive_end == 2.50 and h.accuracy_end == 0.31 and h.cos_pos_neg_end == 0.42
    assert h.code_perplexity == {50: 5.0, 100: 10.0, 150: 15.0, 200: 20.0}  # nearest logged update to 25/50/75/100%
    assert h.states == {"collinear_targets": 50} and h.lowest_perplexity == (25, 2.5)


def test_a_loss_that_falls_on_a_collapsed_codebook_is_not_leaving_chance():
    """A collapsed codebook (code perplexity ≤ 2 per group) makes every negative equal the positive: the loss
    falls to ~0 without learning (the demo's UniSpeech arm at update 100). Only a healthy codebook counts."""
    losses = [(50, 3.04), (100, 0.005), (150, 0.3), (200, 2.70)]
    ppl = [(50, 60.0), (100, 4.0), (150, 4.0), (200, 40.0)]  # 2 groups: 4.0 is 2 per group
    h = summarize(_history({"contrastive_loss": losses, "loss": losses, "code_perplexity": ppl}), {}, 20)
    assert h.first_below == 200 and h.lowest_perplexity == (100, 4.0)
    three = summarize(_history({"contrastive_loss": losses, "loss": losses, "code_perplexity": ppl}), {}, 20,
                      groups=1)  # one group: 4.0 is not a collapse
    assert three.first_below == 100


def test_a_seed_at_chance_says_never_and_a_run_without_the_term_shows_none():
    flat = [(s, 3.04) for s in range(25, 651, 25)]
    at_chance = summarize(_history({"contrastive_loss": flat, "loss": flat}), {}, num_negatives=20)
    supervised = summarize(_history({"contrastive_loss": flat, "loss": flat}), {}, num_negatives=20,
                           contrastive=False)
    assert at_chance.first_below is None and supervised.contrastive_end is None and supervised.last_step == 650
    table = health_table([("unispeech", 1, at_chance), ("supervised", 1, supervised)])
    assert "| unispeech | 1 | 3.040 (3.045) | never in 650 |" in table and "| — | none |" in table
    assert "| supervised | 1 | — (no contrastive term) | — |" in table


def test_read_back_from_a_real_mlflow_store(tmp_path):
    from unispeech_platform.tracking.store import RunStore

    store = RunStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = store.create_run(store.experiment_id("health"), "unispeech-s2/pretrain")
    for step, loss in [(25, 3.04), (50, 2.9), (75, 2.6)]:
        store.log_metrics(run_id, {"loss": loss + 1, "contrastive_loss": loss, "code_perplexity": 30.0 + step,
                                   "contrastive_accuracy": 0.1, "cos_pos_neg": 0.9}, step)
    store.set_tags(run_id, {"health/starved_contrastive": "update 25: contrastive starved: ..."})
    h = read_health(store, run_id, num_negatives=20, contrastive=True, groups=2, collapse_perplexity=2.0)
    assert (h.first_below, h.contrastive_end, h.last_step) == (75, 2.6, 75)
    assert h.states == {"starved_contrastive": 25} and h.code_perplexity[75] == 105.0
