"""jobs.sweep: a 3-trial sweep of the tiny model completes with a parent MLflow run and 3 nested trial runs, ASHA
cuts a trial that lags at its rung, the outputs (trials table, knob plot, best-config YAML) are logged, and
--resume restores the finished experiment instead of starting over. Config mistakes fail before Ray."""

from __future__ import annotations

import pytest
import yaml
from evaluate_helpers import ROOT, two_lang_corpus
from train_helpers import local_ray

from unispeech_platform.config import yaml_value

CONFIG = ROOT / "configs" / "sweep_tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return two_lang_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def private_ray():
    """One private Ray for the module's sweeps, never one left running on this machine (the tests that check
    that config mistakes fail before Ray run first, without it)."""
    with local_ray():
        yield


def _args(corpus, tmp_path, *extra):
    fixed = {
        "data.path": str(corpus), "train.num_workers": 1, "train.max_steps": 8, "train.eval_every": 2,
        "train.eval_max_batches": 2, "checkpoint.every_steps": 2, "checkpoint.keep": 1, "tracking.log_model": False,
        "optim.warmup_steps": 1,
    }
    # lr 3e-3 learns within 4 updates; lr 1e-9 does not move: run first, the good trial sets the bar at the rung
    space = {"optim.lr": {"grid": [3e-3, 1e-9, 1e-9]}, "model.replace_prob": {"uniform": [0.2, 0.8]}}
    sets = {
        "sweep.pretrain_config": str(ROOT / "configs" / "ci.yaml"), "sweep.pretrain_overrides": yaml_value(fixed),
        "sweep.search_space": yaml_value(space), "sweep.num_samples": 1, "sweep.max_concurrent": 1,
        "sweep.grace_period": 4, "sweep.storage_path": str(tmp_path / "sweeps"), "sweep.name": "s",
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    argv = ["--config", str(CONFIG)]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv + list(extra)


def test_bad_sweep_keys_fail_before_ray(tmp_path, capsys):
    import ray

    import jobs.sweep

    argv = _args(tmp_path, tmp_path, "--set", 'sweep.search_space={"model.no_such_knob": {"uniform": [0, 1]}}')
    with pytest.raises(SystemExit) as exc:
        jobs.sweep.main(argv)
    assert exc.value.code == 2 and "no_such_knob" in capsys.readouterr().err
    argv = _args(tmp_path, tmp_path, "--set", "sweep.pretrain_overrides={train.eval_every: 3, checkpoint.every_steps: 4}")
    with pytest.raises(SystemExit):
        jobs.sweep.main(argv)
    assert "eval_every" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        jobs.sweep.main(_args(tmp_path, tmp_path, "--set", "sweep.grace_period=100"))
    assert "grace_period" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert yaml.safe_load(CONFIG.read_text())["sweep"]["search_space"]  # the preset's default space is non-empty


@pytest.mark.slow
def test_three_trial_sweep_nested_runs_asha_and_best_config(corpus, private_ray, tmp_path):
    from mlflow.tracking import MlflowClient

    import jobs.sweep
    from unispeech_platform.config import PretrainJobConfig, load_config

    result = jobs.sweep.main(_args(corpus, tmp_path))
    resumed = jobs.sweep.main(_args(corpus, tmp_path, "--resume"))

    assert len(result.rows) == 3
    by_lr = sorted(result.rows, key=lambda r: -r["optim.lr"])
    assert by_lr[0]["status"] == "COMPLETED" and by_lr[0]["trial_step"] == 8
    stopped = [r for r in result.rows if r["status"] == "EARLY_STOPPED"]
    assert stopped and all(4 <= r["trial_step"] < 8 for r in stopped)
    assert result.best["trial"] == by_lr[0]["trial"]

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    assert len(children) == 3
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)  # none left RUNNING
    early = {c.data.tags["unispeech.trial_id"]: c for c in children if c.data.tags.get("unispeech.early_stopped") == "true"}
    assert set(early) == {r["trial"] for r in stopped} and all(c.info.status == "KILLED" for c in early.values())
    for c in children:  # params + a metric history per trial
        assert float(c.data.params["optim.lr"]) in (3e-3, 1e-9)
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "dev_loss")]
        assert steps[:2] == [2, 4]
    artifacts = {f.path for f in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/trials.csv", "sweep/trials.md", "sweep/metric_vs_knobs.png", "sweep/best_pretrain.yaml"} <= artifacts
    assert parent.data.metrics["best/dev_loss"] == pytest.approx(by_lr[0]["dev_loss_last"])

    best = load_config(PretrainJobConfig, result.best_config)  # ready to run: validates as a pretrain job config
    assert best.optim.lr == 3e-3 and best.checkpoint.name == "s-best"
    assert best.model.replace_prob == pytest.approx(by_lr[0]["model.replace_prob"])

    assert resumed.parent_run_id == result.parent_run_id  # restored, not rerun
    assert sorted(r["trial"] for r in resumed.rows) == sorted(r["trial"] for r in result.rows)


@pytest.mark.slow
def test_sweep_trial_fine_tunes_from_its_pretraining_ctc_head(corpus, private_ray, tmp_path):
    """With a fine-tuning stage the trials are ranked by dev PER over pretraining + fine-tuning steps, and
    init_ctc_head starts the fine-tuning head from the trial's own pretraining CTC head (as jobs.crosslingual)."""
    import torch
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    import jobs.sweep

    ft = {"data.path": str(corpus), "train.num_workers": 1, "train.max_steps": 2, "train.eval_every": 2,
          "train.eval_max_batches": 2, "checkpoint.every_steps": 2, "checkpoint.keep": 1, "tracking.log_model": False,
          "finetune.freeze_transformer_steps": 0, "optim.warmup_steps": 1}
    extra = ["--set", f"sweep.finetune_config={ROOT / 'configs' / 'finetune_tiny.yaml'}",
             "--set", f"sweep.finetune_overrides={yaml_value(ft)}", "--set", "sweep.init_ctc_head=true",
             "--set", 'sweep.search_space={"model.mask_time_prob": {"grid": [0.3]}}', "--set", "sweep.scheduler=fifo",
             "--set", "sweep.name=ft"]
    result = jobs.sweep.main(_args(corpus, tmp_path, *extra))

    (row,) = result.rows
    assert row["status"] == "COMPLETED" and row["trial_step"] == 8 + 2
    # dev PER is a fraction: 8 + 2 updates leave the model on the CTC blank plateau (measured 1.0, all deletions);
    # above 1.5 (mostly insertions) the fine-tuning head would be untrained, below 0.5 the references leaked
    assert 0.5 <= row["dev_per_last"] <= 1.5 and row["dev_per_best"] <= row["dev_per_last"]
    trials = tmp_path / "sweeps" / "ft-trials"
    (export,) = [p for p in trials.glob("*-pretrain/model") if p.is_dir()]
    head = load_file(str(trials / f"{export.parent.name}" / "model_ctchead" / "model.safetensors"))
    pre = load_file(str(export / "model.safetensors"))
    assert torch.equal(head["lm_head.weight"], pre["ctc_proj.weight"])
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    (trial_run,) = runs
    stages = client.search_runs([trial_run.info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{trial_run.info.run_id}'")
    (ft_run,) = [r for r in stages if r.data.params.get("finetune.init_from")] or [None]
    assert ft_run is not None and ft_run.data.params["finetune.init_from"].endswith("_ctchead")
    assert client.get_metric_history(ft_run.info.run_id, "dev_per")
    # the fine-tuning results carried the pretraining's end (its own reports had no dev PER for Tune): the row's
    # contrastive loss is the one the pretraining logged last
    logged = max(client.get_metric_history(trial_run.info.run_id, "contrastive_loss"), key=lambda m: m.step)
    assert row["contrastive_end"] == pytest.approx(logged.value, rel=1e-6) and row["left_chance"] in (True, False)


def test_nested_override_sets_a_key_without_replacing_the_preset_section():
    """`--set sweep.pretrain_overrides.model.ctc_weight=0` arrives as {"model": {"ctc_weight": 0}}; passed whole it
    replaced tiny.yaml's model section and every trial silently trained the default (base-size) model."""
    from unispeech_platform.config import as_overrides, load_config
    from unispeech_platform.tune.config import SweepJobConfig
    from unispeech_platform.tune.search_space import validate_sweep

    assert as_overrides({"model": {"ctc_weight": 0.0}, "train.max_steps": 9}) == [
        "model.ctc_weight=0.0", "train.max_steps=9"]
    cfg = load_config(SweepJobConfig, ROOT / "configs" / "sweep_crosslingual_cpu.yaml",
                      ["sweep.pretrain_overrides.model.ctc_weight=0.0", "sweep.pretrain_overrides.model.replace_prob=0.0",
                       "sweep.search_space={model.mask_time_prob: {choice: [0.05, 0.5]}}"])  # the baselines' space
    pre, ft = validate_sweep(cfg.sweep)
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["model"]
    assert pre.model.ctc_weight == 0.0 and pre.model.replace_prob == 0.0
    assert {k: pre.model.overrides()[k] for k in ("hidden_size", "num_hidden_layers", "num_negatives")} == {
        k: tiny[k] for k in ("hidden_size", "num_hidden_layers", "num_negatives")}
    assert ft is not None and ft.data.labeled_only


def test_a_data_path_set_on_the_command_line_reaches_the_trials_absolute(tmp_path, monkeypatch):
    """`--set sweep.pretrain_overrides.data.path=...` arrives nested beside the YAML's dotted `data.path`; trials run
    in their own directories, so the path they get must be that one, absolute (it used to be the nested relative
    one, applied last: every trial failed with 'corpus directory does not exist' after Ray had started)."""
    from unispeech_platform.config import PretrainJobConfig, as_overrides, load_config
    from unispeech_platform.tune.config import SweepJobConfig
    from unispeech_platform.tune.search_space import validate_sweep
    from unispeech_platform.tune.sweep import _abs_paths

    monkeypatch.chdir(ROOT)  # where a user runs jobs.sweep (the config's stage configs are relative to it)
    cfg = load_config(SweepJobConfig, ROOT / "configs" / "sweep_crosslingual_cpu.yaml",
                      ["sweep.pretrain_overrides.data.path=other/high", "sweep.pretrain_overrides.data.vocab_path=other/v.json"])
    assert cfg.sweep.pretrain_overrides["data.path"] == "data/crosslingual-labeled/high"  # both forms are there
    assert cfg.sweep.pretrain_overrides["data"] == {"path": "other/high", "vocab_path": "other/v.json"}
    pre, _ = validate_sweep(cfg.sweep)
    shipped = _abs_paths(pre, cfg.sweep.pretrain_overrides)
    monkeypatch.chdir(tmp_path)  # a trial actor's own directory
    trial = load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml", as_overrides(shipped))
    assert str(trial.data.path) == str(ROOT / "other" / "high")
    assert str(trial.data.vocab_path) == str(ROOT / "other" / "v.json")
    assert trial.train.max_steps == pre.train.max_steps == 450  # the other fixed overrides still arrive


def test_an_mlflow_outage_never_stops_a_sweep_and_resume_replays_its_end(tmp_path, dead_uri, capsys):
    """(No Ray) A Tune callback that raises stops every trial of the sweep: closing a trial's runs while MLflow is
    away only warns. The sweep's end (trial runs closed from its table, report, best metric, status) is spooled in
    `<name>-trials/` with a trial stage's leftovers, and the replay before a --resume lands all of it."""
    from types import SimpleNamespace

    from unispeech_platform.tracking import BestEffortStore, RunStore, Spool, read_records
    from unispeech_platform.tune.mlflow_callback import (
        CloseTrialRuns,
        finish_sweep_run,
        nested_run,
        replay_earlier_attempt,
    )

    dead = dead_uri
    live = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = RunStore(live)
    parent = store.create_run(store.experiment_id("sweeps"), "sweep-s")
    trials = {t: nested_run(live, parent, t, f"{t}-pretrain", "pretrain") for t in ("t1", "t2")}
    runs_dir, report = tmp_path / "s-trials", tmp_path / "s-report"
    report.mkdir()
    (report / "trials.md").write_text("| trial |\n")
    stage_spool = runs_dir / "t1-pretrain" / "mlflow_spool.jsonl"
    BestEffortStore(dead, Spool(str(stage_spool)), warn=lambda line: None).log_metrics(trials["t1"], {"loss": 2.0}, 3)

    CloseTrialRuns(dead, parent, 8)._close(SimpleNamespace(trial_id="t1", last_result={"trial_step": 8}),
                                           failed=False)  # never raises
    assert "the runs of trial t1 could not be closed" in capsys.readouterr().out
    rows = [{"trial": "t1", "trial_step": 8, "status": "COMPLETED", "dev_per_last": 0.4},
            {"trial": "t2", "trial_step": 4, "status": "EARLY_STOPPED", "dev_per_last": 0.7}]
    finish_sweep_run(dead, parent, rows, report=report, metric="dev_per", best=rows[0], failed=False, runs_dir=runs_dir)
    out = capsys.readouterr().out
    assert "replayed when this sweep runs again with --resume" in out and str(stage_spool) in out
    assert ":pw@" not in out  # the login in the URI never reaches a warning
    assert store.run(parent).info.status == "RUNNING" and store.run(trials["t1"]).info.status == "RUNNING"

    replay_earlier_attempt(live, runs_dir)  # the server back: what --resume does before it reopens the sweep's run
    finish_sweep_run(live, parent, rows, report=report, metric="dev_per", best=rows[0], failed=False,
                     runs_dir=runs_dir)  # ... and the resumed sweep's own end
    done = store.run(parent)
    assert done.info.status == "FINISHED" and done.data.metrics["best/dev_per"] == 0.4
    assert done.data.tags["unispeech.best_trial"] == "t1"
    assert [a.path for a in store.client.list_artifacts(parent, "sweep")] == ["sweep/trials.md"]
    assert store.run(trials["t1"]).info.status == "FINISHED" and store.run(trials["t2"]).info.status == "KILLED"
    assert store.metric_history(trials["t1"], "loss") == [(3, 2.0)]
    assert all(read_records(str(p))[1] == [] for p in (stage_spool, runs_dir / "mlflow_spool.jsonl"))


def test_a_trial_in_a_failure_state_is_named_and_not_picked_over_a_healthy_one():
    """(No Ray) The trials table names the states a trial's pretraining reported (they are in its history, the
    last result is the fine-tuning's); the best trial is a healthy one when one completed."""
    from types import SimpleNamespace

    import pandas as pd

    from unispeech_platform.tune.report import best_row, trials_table

    def trial(name, per, health=None):
        history = pd.DataFrame([{"trial_step": 5, **({f"health/{health}": 1.0} if health else {})},
                                {"trial_step": 10, "dev_per": per}])
        return SimpleNamespace(metrics={"trial_id": name, "trial_step": 10, "dev_per": per}, metrics_dataframe=history,
                               error=None, path=f"/x/{name}", config={"model.ctc_weight": 0.5})

    rows = trials_table([trial("a", 0.30, "collinear_targets"), trial("b", 0.40)], ["model.ctc_weight"], "dev_per",
                        "min", 10)
    assert [(r["trial"], r["health"]) for r in rows] == [("a", "collinear_targets"), ("b", "")]
    assert best_row(rows, "dev_per", "min")["trial"] == "b"  # 0.30 came from a run whose contrastive term failed
    only_sick = [r for r in rows if r["health"]]
    assert best_row(only_sick, "dev_per", "min")["trial"] == "a"  # with no healthy trial, the metric decides


def test_a_trial_is_judged_by_where_its_contrastive_loss_ended_not_by_a_state_it_left():
    """(No Ray) With the pretraining's end carried into the trial's results, a trial is sound when its contrastive
    loss had left chance (< 0.9 ln(K+1)) at the end on a sound codebook, whatever it named on the way; one still
    at chance, or low only over a collapsed codebook, is not picked, whatever its dev PER."""
    import math
    from types import SimpleNamespace

    import pandas as pd

    from unispeech_platform.train.health import Objective, Thresholds
    from unispeech_platform.tune.report import best_row, pretraining_end, trials_table

    chance = math.log(21)  # K = 20
    pre_end = {"contrastive_loss": 2.5, "code_perplexity": 40.0, "contrastive_accuracy": 0.2, "cos_pos_neg": 0.7,
               "dev_per": 0.9, "loss": 9.0, "health/collinear_targets": 1.0}
    carried = pretraining_end(pre_end)
    assert carried == {"pretrain/contrastive_loss": 2.5, "pretrain/code_perplexity": 40.0,
                       "pretrain/contrastive_accuracy": 0.2, "pretrain/cos_pos_neg": 0.7,
                       "health/collinear_targets": 1.0}

    def trial(name, per, ctc_weight, **pre):
        last = {"trial_id": name, "trial_step": 10, "dev_per": per, "stage": "finetune",
                **pretraining_end({"code_perplexity": 40.0, **pre})}
        return SimpleNamespace(metrics=last, metrics_dataframe=pd.DataFrame([last]), error=None, path=f"/x/{name}",
                               config={"model.ctc_weight": ctc_weight})

    def objective_of(values):
        return Objective(num_groups=2, num_negatives=20, ctc_weight=values["model.ctc_weight"]), Thresholds()

    trials = [trial("left", 0.30, 0.5, contrastive_loss=0.85 * chance, **{"health/collinear_targets": 1.0}),
              trial("chance", 0.20, 0.5, contrastive_loss=0.99 * chance),
              trial("collapsed", 0.25, 0.5, contrastive_loss=0.01, code_perplexity=4.0),  # 2 per group
              trial("supervised", 0.22, 1.0, contrastive_loss=3.0, **{"health/ctc_blank_plateau": 1.0})]
    rows = trials_table(trials, ["model.ctc_weight"], "dev_per", "min", 10, objective_of)
    assert [(r["trial"], r["left_chance"]) for r in rows] == [
        ("chance", False), ("collapsed", False), ("left", True), ("supervised", None)]
    assert rows[2]["contrastive_end"] == pytest.approx(0.85 * chance) and rows[2]["health"] == "collinear_targets"
    assert rows[3]["contrastive_end"] is None  # no contrastive term: judged by its states (it named one)
    assert best_row(rows, "dev_per", "min")["trial"] == "left"
    # without the objective the columns stay empty and the states decide, as before
    plain = trials_table(trials, ["model.ctc_weight"], "dev_per", "min", 10)
    assert {r["left_chance"] for r in plain} == {None} and best_row(plain, "dev_per", "min")["trial"] == "chance"


def test_a_trials_objective_is_its_pretrainings_with_the_sampled_values():
    """(No Ray) K, groups, ctc_weight and the collapse threshold of a trial come from the sweep's pretraining
    config with the trial's sampled values on top."""
    from unispeech_platform.config import PretrainJobConfig, load_config
    from unispeech_platform.tune.sweep import trial_objective

    base = load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml")
    objective, limits = trial_objective(base)({"model.num_negatives": 50, "model.ctc_weight": 0.3,
                                               "train.collapse_perplexity": 3.0, "optim.lr": 1e-3})
    assert (objective.num_negatives, objective.ctc_weight, limits.collapse_per_group) == (50, 0.3, 3.0)
    assert objective.num_groups == base.model.effective("num_codevector_groups")
