"""`python -m jobs.quickstart` end to end on the tiny preset: corpus, pretraining (2 workers, ZeRO-2), fine-tuning,
per-language PER table, MLflow parent/arm/job runs; bad configs fail before Ray; failed steps are named."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_quickstart

from unispeech_platform.experiments.runner import ExperimentStepError, Progress


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    return tiny_quickstart(tmp_path_factory)


@pytest.mark.slow
def test_quickstart_end_to_end(quickstart):
    from mlflow.tracking import MlflowClient

    result, stdout, base = quickstart
    assert "| test | pt |" in stdout and "avg (macro)" in stdout  # the PER table
    assert "mlflow ui --backend-store-uri sqlite:///" in stdout and "[5/5]" in stdout
    per = result.arms[0].per()
    # A fraction, not %: 4 + 4 updates leave the model on the CTC blank plateau (measured 1.0: no phone emitted, all
    # deletions). Below 0.5 would be a leak; above 1.5 (mostly insertions) an untrained or unloaded CTC head.
    assert set(per) == {"pt", "avg"} and per["avg"] == pytest.approx(per["pt"]) and 0.5 <= per["pt"] <= 1.5
    client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics.get("per/pt") == pytest.approx(per["pt"])
    assert parent.data.params["corpus.low_resource"] == "['pt']"
    children = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert [r.info.run_name for r in children] == ["unispeech"]
    arm = children[0]
    assert "per/pt" in arm.data.metrics and "time/pretrain_s" in arm.data.metrics
    jobs = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{arm.info.run_id}'")
    assert sorted(r.info.run_name for r in jobs) == ["unispeech/finetune", "unispeech/pretrain"]
    assert all(r.info.status == "FINISHED" and "loss" in r.data.metrics for r in jobs)
    finetune = next(r for r in jobs if r.info.run_name == "unispeech/finetune")
    (evaluation,) = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{finetune.info.run_id}'")
    assert evaluation.info.run_name == "unispeech/evaluate" and evaluation.info.status == "FINISHED"
    (step,) = {m.step for m in client.get_metric_history(evaluation.info.run_id, "per/pt")}
    assert step > 0 and step in {m.step for m in client.get_metric_history(finetune.info.run_id, "loss")}  # its update


def test_bad_config_fails_before_ray(capsys):
    from jobs import quickstart

    with pytest.raises(SystemExit) as e:
        quickstart.main(["--config", "configs/quickstart_tiny.yaml", "--set", "pretrain.overrides={train.max_stepz: 3}"])
    assert e.value.code == 2 and "max_stepz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        quickstart.main(["--config", "configs/quickstart_tiny.yaml", "--set", "corpus.low_resource=[xx]"])
    assert e.value.code == 2


def test_failed_step_is_named():
    progress = Progress(3)
    with pytest.raises(ExperimentStepError, match=r"step 1/3 'pretraining' failed: RuntimeError: boom"):
        with progress.step("pretraining"):
            raise RuntimeError("boom")


def test_fine_tuning_head_starts_from_the_pretraining_ctc_head(tmp_path):
    import torch
    from evaluate_helpers import CI_MODEL

    from unispeech_core import UniSpeechConfig, UniSpeechForCTC, UniSpeechForPreTraining
    from unispeech_core.checkpoint import copy_ctc_head

    torch.manual_seed(0)
    pre = UniSpeechForPreTraining(UniSpeechConfig(**CI_MODEL, vocab_size=12, num_ctc_classes=12))
    pre.save_pretrained(tmp_path / "model")
    ctc = UniSpeechForCTC.from_pretrained(copy_ctc_head(str(tmp_path / "model"), str(tmp_path / "model_ctchead")),
                                          allow_new_head=True)
    assert torch.equal(ctc.lm_head.weight, pre.ctc_proj.weight) and torch.equal(ctc.lm_head.bias, pre.ctc_proj.bias)
