"""`python -m jobs.crosslingual` on the tiny preset: three arms (supervised, self-supervised, UniSpeech) with the
same data and steps, the paper-style table with relative reductions, one MLflow child run per arm."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_args
from train_helpers import local_ray

from unispeech_platform.evaluate.scoring import Score
from unispeech_platform.experiments.report import ArmResult, relative_reductions, results_table


def _arm(name: str, pt: float, fr: float) -> ArmResult:
    return ArmResult(name, [Score("test", "pt", 5, 50, pt, 0, 0, 0), Score("test", "fr", 5, 50, fr, 0, 0, 0),
                            Score("test", "avg", 10, 100, (pt + fr) / 2, 0, 0, 0)])


def test_table_and_relative_reductions():
    arms = [_arm("supervised", 0.5, 0.7), _arm("self_supervised", 0.4, 0.6), _arm("unispeech", 0.3, 0.5)]
    red = relative_reductions(arms, "unispeech")
    assert red["supervised"] == pytest.approx(1 / 3) and red["self_supervised"] == pytest.approx(0.2)
    table = results_table(arms, "unispeech")
    assert "| arm | pt | fr | avg |" in table and "| unispeech | 30.0 | 50.0 | **40.0** |" in table
    assert "unispeech vs supervised: +33.3% relative PER reduction" in table


@pytest.mark.slow
def test_crosslingual_three_arms(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from jobs import crosslingual

    base = tmp_path_factory.getbasetemp() / "experiments"
    results = base / "results.md"
    with local_ray():
        result = crosslingual.main([*tiny_args("configs/crosslingual_tiny.yaml", base),
                                    "--set", f"experiment.results_path={results}"])
    assert [a.name for a in result.arms] == ["supervised", "self_supervised", "unispeech"]
    text = results.read_text()
    assert "python -m jobs.crosslingual --config configs/crosslingual_tiny.yaml" in text
    assert "| arm | pt | avg |" in text and "unispeech vs self_supervised:" in text and "cores" in text
    client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
    parent = client.get_run(result.run_id).data.metrics
    assert {"per/unispeech/avg", "per/supervised/pt", "rel_reduction/vs_self_supervised"} <= set(parent)
    arms = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert sorted(r.info.run_name for r in arms) == ["self_supervised", "supervised", "unispeech"]
    assert all("per/pt" in r.data.metrics for r in arms)


@pytest.mark.parametrize("preset", ["crosslingual_tiny", "crosslingual_cpu", "crosslingual_gpu", "quickstart"])
def test_presets_build_every_stage_and_apply_arm_overrides(preset):
    """Each shipped experiment builds all its stage configs without Ray, and an arm's overrides (e.g. the
    per-arm mask_time_prob picked by the sweeps) reach that arm's pretraining only, on top of the preset's model."""
    import yaml
    from evaluate_helpers import ROOT

    from unispeech_platform.config import load_config
    from unispeech_platform.experiments.config import ExperimentConfig
    from unispeech_platform.experiments.runner import validate

    cfg = load_config(ExperimentConfig, ROOT / "configs" / f"{preset}.yaml")
    stages = validate(cfg)
    base = yaml.safe_load((ROOT / cfg.pretrain.config).read_text())["model"]
    for s in stages:
        expected = {**base, **{k.split(".", 1)[1]: v for k, v in cfg.pretrain.overrides.items() if k.startswith("model.")}}
        expected.update({k.split(".", 1)[1]: v for k, v in cfg.experiment.arms[s.name].items()})
        assert {k: s.pretrain.model.overrides()[k] for k in expected} == expected, s.name
        assert s.finetune.finetune.init_from == s.init_dir and s.finetune.data.labeled_only
