"""`python -m jobs.crosslingual` on the tiny preset: three arms (supervised, self-supervised, UniSpeech) with the
same data and steps, the paper-style table with relative reductions, one MLflow child run per arm; a resume after
a stop, and an MLflow outage through a whole arm (a real `mlflow server` killed and later restarted)."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from experiment_helpers import tiny_args
from mlflow_helpers import kill_mlflow, serve_mlflow
from train_helpers import local_ray


class KillWhenPlanned(threading.Thread):
    """Kills the server once the experiment has created (SCHEDULED) the runs of the arm it runs next: everything
    after that (the arm's stages, its scores, the parent's table) happens with MLflow away."""

    def __init__(self, proc, db: Path, run_name: str):
        super().__init__(daemon=True)
        self.proc, self.db, self.run_name, self.killed = proc, db, run_name, False

    def _planned(self) -> bool:
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1) as con:
                return con.execute("select count(*) from runs where name = ? and status = 'SCHEDULED'",
                                   (self.run_name,)).fetchone()[0] > 0
        except sqlite3.Error:
            return False

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._planned() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the answer to that last call reaches the experiment first
        kill_mlflow(self.proc)
        self.killed = time.monotonic() < deadline


@pytest.mark.slow
def test_crosslingual_three_arms_a_resume_after_a_stop_and_an_outage(tmp_path_factory, capsys):
    from mlflow.tracking import MlflowClient

    from jobs import crosslingual
    from unispeech_platform.tracking import read_records

    base = tmp_path_factory.getbasetemp() / "experiments"
    results = base / "results.md"
    base.mkdir(parents=True, exist_ok=True)
    results.write_text("# Hand-written\n\nKeep me.\n")
    db = base / "mlflow.db"
    proc, url = serve_mlflow(f"sqlite:///{db}", base / "server.log", base / "artifacts")
    port = int(url.rsplit(":", 1)[1])
    args = [*tiny_args("configs/crosslingual_tiny.yaml", base), "--set", f"tracking.uri={url}",
            "--set", f"experiment.results_path={results}"]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")  # the server's store, readable while it is away
    try:
        with local_ray():  # one Ray for the run and its resumes (a job joins the Ray that is up): one cold start
            result = crosslingual.main(args)
            assert [a.name for a in result.arms] == ["supervised", "self_supervised", "unispeech"]
            text = results.read_text()  # the generated block appended between its markers, the rest kept
            assert text.startswith("# Hand-written\n\nKeep me.\n\n<!-- BEGIN GENERATED: crosslingual-tiny -->\n")
            assert text.endswith("<!-- END GENERATED: crosslingual-tiny -->\n") and text.count("BEGIN GENERATED") == 1
            assert "python -m jobs.crosslingual --config configs/crosslingual_tiny.yaml" in text
            assert "| arm | pt | avg |" in text and "unispeech vs self_supervised:" in text and "cores" in text
            assert "Pretraining health per arm and seed" in text and "| supervised | 0 | — (no contrastive term)" in text
            assert all(a.health["pretrain"].last_step == 2 for a in result.arms), [a.health for a in result.arms]
            parent = client.get_run(result.run_id).data.metrics
            assert {"per/unispeech/avg", "per/supervised/pt", "rel_reduction/vs_self_supervised",
                    "rel_reduction_ci_low/vs_supervised", "rel_reduction_ci_high/vs_supervised"} <= set(parent)
            arms = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
            assert sorted(r.info.run_name for r in arms) == ["self_supervised", "supervised", "unispeech"]
            assert all("per/pt" in r.data.metrics and r.info.status == "FINISHED" for r in arms)

            # Stopped during its last arm: a killed process leaves no result file for it and its MLflow run RUNNING.
            root = base / "runs" / "crosslingual-tiny"
            (root / "unispeech-result.json").unlink()
            stale = next(r.info.run_id for r in arms if r.info.run_name == "unispeech")
            client.update_run(stale, status="RUNNING")
            kept_file = (root / "supervised-result.json").read_bytes()
            for extra, code, says in ((["--set", "finetune.overrides.train.max_steps=3"], 3,
                                       "finetune.overrides.train.max_steps"), (["--overwrite"], 2, "exclude each other")):
                with pytest.raises(SystemExit) as stop:
                    crosslingual.main([*args, *extra, "--resume"])
                assert stop.value.code == code and says in capsys.readouterr().err

            # The resume runs the last arm again, and MLflow dies once that arm's runs exist: the arm still trains,
            # is scored and lands in the table; what MLflow missed is spooled in the experiment's storage.
            outage = KillWhenPlanned(proc, db, "unispeech/finetune")
            outage.start()
            resumed = crosslingual.main([*args, "--resume"])
            outage.join(timeout=60)
            assert outage.killed
            console = capsys.readouterr().out
            assert "WARNING: MLflow" in console and "replayed when this experiment runs again with --resume" in console
            assert [a.name for a in resumed.arms] == ["supervised", "self_supervised", "unispeech"]
            assert list(resumed.kept) == ["supervised", "self_supervised"] and resumed.run_id == result.run_id
            assert (root / "supervised-result.json").read_bytes() == kept_file  # not run again
            assert resumed.arms[0].per() == result.arms[0].per()
            assert results.read_text().count("BEGIN GENERATED") == 1
            new_arm = resumed.arms[2].run_id
            assert client.get_run(new_arm).info.status in ("SCHEDULED", "RUNNING")  # MLflow never heard the rest

            # The server back: the next --resume keeps every arm and replays every spool before it goes on.
            proc, _ = serve_mlflow(f"sqlite:///{db}", base / "server.log", base / "artifacts", port)
            again = crosslingual.main([*args, "--resume"])
        assert list(again.kept) == ["supervised", "self_supervised", "unispeech"]
        assert client.get_run(stale).info.status == "KILLED" and client.get_run(result.run_id).info.status == "FINISHED"
        arm = client.get_run(new_arm)
        assert arm.info.status == "FINISHED" and {"per/pt", "time/pretrain_s"} <= set(arm.data.metrics)
        stages = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{new_arm}'")
        assert sorted(r.info.run_name for r in stages) == ["unispeech/finetune", "unispeech/pretrain"]
        assert all(r.info.status == "FINISHED" and "loss" in r.data.metrics for r in stages)
        spools = sorted(root.rglob("mlflow_spool.jsonl"))
        assert root / "mlflow_spool.jsonl" in spools and all(read_records(str(s))[1] == [] for s in spools)
        arms = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
        assert sorted(r.info.run_name for r in arms) == ["self_supervised", "supervised", "unispeech", "unispeech"]
        text = results.read_text()
        assert text.count("BEGIN GENERATED") == 1 and "resumed (`--resume`): 3 run(s) finished before it" in text
    finally:
        kill_mlflow(proc)


@pytest.mark.parametrize("preset", ["crosslingual_tiny", "crosslingual_cpu", "crosslingual_cpu_unlabeled", "crosslingual_gpu",
                                    "quickstart"])
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
        spec = cfg.experiment.continued.get(s.name)
        if spec is not None:  # a two-stage arm: its budget split, stage 2 with its own overrides on the targets' audio
            assert s.pretrain.train.max_steps + s.continued.train.max_steps == cfg.pretrain.overrides["train.max_steps"]
            assert s.pretrain.data.labeled_only and s.continued.data.langs == cfg.corpus.unlabeled_languages()
            for key, value in spec.overrides.items():
                section, field = key.split(".", 1)
                assert getattr(getattr(s.continued, section), field) == value, (s.name, key)


TWO_STAGE = [
    "--set", "experiment.arms={two_stage: {model.ctc_weight: 0.5, model.replace_prob: 0.5}}",
    "--set", "experiment.continued={two_stage: {share: 0.5}}",
    "--set", "experiment.reference_arm=null",
    "--set", "corpus.unlabeled_per_lang=8",
    "--set", "pretrain.overrides.train.max_steps=4",
]


def test_a_two_stage_arm_splits_the_budget_and_continues_on_the_unlabeled_targets(tmp_path):
    """(No Ray) The authors' recipe: stage 1 on the labeled rows, stage 2 from its export on the targets' unlabeled
    rows, contrastive only, the same total updates; fine-tuning starts from stage 2."""
    from experiment_helpers import tiny_args

    from unispeech_platform.config import ConfigError, load_config
    from unispeech_platform.experiments.config import ExperimentConfig
    from unispeech_platform.experiments.runner import validate
    from unispeech_platform.runtime.layout import RunLayout

    args = tiny_args("configs/crosslingual_tiny.yaml", tmp_path)
    sets = [v for k, v in zip(args, args[1:]) if k == "--set"] + TWO_STAGE[1::2]
    cfg = load_config(ExperimentConfig, "configs/crosslingual_tiny.yaml", sets)
    (st,) = validate(cfg)
    one, two = st.pretrain, st.continued
    assert (one.train.max_steps, two.train.max_steps) == (2, 2)  # 4 updates in all, as any other arm
    assert one.data.labeled_only and not two.data.labeled_only and two.data.langs == ["pt"]
    assert (one.model.ctc_weight, two.model.ctc_weight) == (0.5, 0.0)
    assert two.pretrain.init_from == RunLayout.of(one.checkpoint).export_dir
    assert st.init_dir.startswith(RunLayout.of(two.checkpoint).export_dir)
    assert two.checkpoint.name == "two_stage-continued" and two.data.path == one.data.path
    with pytest.raises(ConfigError, match="corpus.unlabeled_per_lang"):
        load_config(ExperimentConfig, "configs/crosslingual_tiny.yaml", sets + ["corpus.unlabeled_per_lang=0"])
    with pytest.raises(ConfigError, match="not in experiment.arms"):
        load_config(ExperimentConfig, "configs/crosslingual_tiny.yaml", sets + ["experiment.continued={x: {}}"])


@pytest.mark.slow
def test_a_two_stage_arm_runs_end_to_end(tmp_path_factory, capsys):
    """jobs.crosslingual with one two-stage arm: stage 1, stage 2 (its own MLflow run under the arm), fine-tuning
    and evaluation; stage 2 logs no CTC term and starts from stage 1's export."""
    from experiment_helpers import tiny_args
    from mlflow.tracking import MlflowClient
    from train_helpers import local_ray

    from jobs import crosslingual

    base = tmp_path_factory.mktemp("two_stage")
    with local_ray():
        result = crosslingual.main([*tiny_args("configs/crosslingual_tiny.yaml", base), *TWO_STAGE])
    out = capsys.readouterr().out
    assert "two_stage: continued pretraining on the unlabeled rows of pt from stage 1" in out
    # corpus, Ray, stage 1, stage 2, fine-tuning, evaluation: the progress count includes the continued stage
    steps = re.findall(r"^<== \[(\d+)/(\d+)\]", out, re.M)
    assert steps[-1] == ("6", "6") and len(steps) == 6
    (arm,) = result.arms
    assert set(arm.seconds) == {"pretrain", "continued", "finetune", "evaluate"} and arm.per()
    client = MlflowClient(f"sqlite:///{base / 'mlflow.db'}")
    stages = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{arm.run_id}'")
    runs = {r.info.run_name: r for r in stages}
    assert set(runs) == {"two_stage/pretrain", "two_stage/continued", "two_stage/finetune"}
    continued = runs["two_stage/continued"]
    assert continued.info.status == "FINISHED" and continued.data.params["model.ctc_weight"] == "0.0"
    assert continued.data.params["pretrain.init_from"].endswith("two_stage-pretrain/model")
    assert "ctc_loss" not in continued.data.metrics and "contrastive_loss" in continued.data.metrics
    assert set(arm.health) == {"pretrain", "continued"}  # the report's health rows: both stages, from MLflow
    assert arm.health["continued"].contrastive_end == continued.data.metrics["contrastive_loss"]
