"""`python -m jobs.crosslingual` on the tiny preset: three arms (supervised, self-supervised, UniSpeech) with the
same data and steps, the paper-style table with relative reductions, one MLflow child run per arm."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_args
from train_helpers import local_ray


@pytest.mark.slow
def test_crosslingual_three_arms_and_a_resume_after_a_stop(tmp_path_factory, capsys):
    from mlflow.tracking import MlflowClient

    from jobs import crosslingual

    base = tmp_path_factory.getbasetemp() / "experiments"
    results = base / "results.md"
    base.mkdir(parents=True, exist_ok=True)
    results.write_text("# Hand-written\n\nKeep me.\n")
    with local_ray():  # one Ray for the run and its resume (a job joins the Ray that is up): one cold start
        result = crosslingual.main([*tiny_args("configs/crosslingual_tiny.yaml", base),
                                    "--set", f"experiment.results_path={results}"])
        assert [a.name for a in result.arms] == ["supervised", "self_supervised", "unispeech"]
        text = results.read_text()  # the generated block appended between its markers, the rest kept
        assert text.startswith("# Hand-written\n\nKeep me.\n\n<!-- BEGIN GENERATED: crosslingual-tiny -->\n")
        assert text.endswith("<!-- END GENERATED: crosslingual-tiny -->\n") and text.count("BEGIN GENERATED") == 1
        assert "python -m jobs.crosslingual --config configs/crosslingual_tiny.yaml" in text
        assert "| arm | pt | avg |" in text and "unispeech vs self_supervised:" in text and "cores" in text
        client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
        parent = client.get_run(result.run_id).data.metrics
        assert {"per/unispeech/avg", "per/supervised/pt", "rel_reduction/vs_self_supervised",
                "rel_reduction_ci_low/vs_supervised", "rel_reduction_ci_high/vs_supervised"} <= set(parent)
        arms = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
        assert sorted(r.info.run_name for r in arms) == ["self_supervised", "supervised", "unispeech"]
        assert all("per/pt" in r.data.metrics for r in arms)

        # Stopped during its last arm: a killed process leaves no result file for it and its MLflow run RUNNING.
        root = base / "runs" / "crosslingual-tiny"
        (root / "unispeech-result.json").unlink()
        stale = next(r.info.run_id for r in arms if r.info.run_name == "unispeech")
        client.update_run(stale, status="RUNNING")
        kept_file = (root / "supervised-result.json").read_bytes()
        args = [*tiny_args("configs/crosslingual_tiny.yaml", base), "--set", f"experiment.results_path={results}"]
        for extra, code, says in ((["--set", "finetune.overrides.train.max_steps=3"], 3, "finetune.overrides.train.max_steps"),
                                  (["--overwrite"], 2, "exclude each other")):
            with pytest.raises(SystemExit) as stop:
                crosslingual.main([*args, *extra, "--resume"])
            assert stop.value.code == code and says in capsys.readouterr().err
        resumed = crosslingual.main([*args, "--resume"])
        assert [a.name for a in resumed.arms] == ["supervised", "self_supervised", "unispeech"]
        assert list(resumed.kept) == ["supervised", "self_supervised"] and resumed.run_id == result.run_id
        assert (root / "supervised-result.json").read_bytes() == kept_file  # not run again
        assert resumed.arms[0].per() == result.arms[0].per()
        assert client.get_run(stale).info.status == "KILLED" and client.get_run(result.run_id).info.status == "FINISHED"
        arms = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
        assert sorted(r.info.run_name for r in arms) == ["self_supervised", "supervised", "unispeech", "unispeech"]
        text = results.read_text()
        assert text.count("BEGIN GENERATED") == 1 and "resumed (`--resume`): 2 run(s) finished before it" in text


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
        arm = cfg.experiment.arms[s.name]
        expected.update({k.split(".", 1)[1]: v for k, v in arm.items() if k.startswith("model.")})
        assert {k: s.pretrain.model.overrides()[k] for k in expected} == expected, s.name
        for key, value in arm.items():  # other sections an arm sets (e.g. its own optim.lr from its sweep)
            section, field = key.split(".", 1)
            assert getattr(getattr(s.pretrain, section), field) == value, (s.name, key)
        assert s.finetune.finetune.init_from == s.init_dir and s.finetune.data.labeled_only
