"""Language ID: jobs.lid fine-tunes UniSpeechForSequenceClassification on a tiny es+ru corpus and separates the
two languages on held-out speakers far above chance; accuracy and the confusion matrix land in the MLflow run."""

from __future__ import annotations

import json

import pytest
from evaluate_helpers import CI_MODEL, ROOT, two_lang_corpus
from train_helpers import local_ray

CONFIG = ROOT / "configs" / "lid_tiny.yaml"
STEPS = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return two_lang_corpus(tmp_path_factory)


def _dev_rows(corpus) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in corpus.glob("lang=*/split=dev/*.parquet"))


@pytest.mark.slow
def test_lid_separates_two_languages_far_above_chance(corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    import jobs.lid

    model = {**CI_MODEL, "mask_time_prob": 0.05, "classifier_proj_size": 32, "use_weighted_layer_sum": True}
    sets = {
        "model": json.dumps(model), "data.path": str(corpus), "data.max_batch_size": 8, "data.max_batch_seconds": 30,
        "finetune.init_from": "null", "finetune.freeze_feature_encoder": "false", "train.num_workers": 1,
        "train.max_steps": STEPS, "train.eval_every": 40, "train.log_every": 10, "train.eval_max_batches": 8,
        "optim.lr": 2e-3, "optim.warmup_steps": 10, "checkpoint.every_steps": 40,
        "checkpoint.storage_path": str(tmp_path / "runs"), "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "ray.data_context": json.dumps({"target_max_block_size": 262144}),
    }
    argv = ["--config", str(CONFIG)]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    with local_ray():  # a private Ray, never one left running here
        report = jobs.lid.main(argv)

    assert report.labels == ["es", "ru"]
    n = sum(map(sum, report.confusion))
    assert n == _dev_rows(corpus)  # every utterance of the held-out dev speakers was scored
    assert report.accuracy >= 0.75, report.confusion  # chance is 0.5 (measured: 0.83)
    assert min(report.per_language.values()) >= 0.6

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("unispeech-tiny").experiment_id])
    (train,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (run,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == train.info.run_id]  # the LID's own run
    assert run.data.metrics["lid/accuracy"] == pytest.approx(report.accuracy)
    assert "dev_accuracy" in train.data.metrics
    (step,) = [m.step for m in client.get_metric_history(run.info.run_id, "lid/accuracy")]
    dev = {m.step: m.value for m in client.get_metric_history(train.info.run_id, "dev_accuracy")}
    assert dev.get(step) == max(dev.values()), (step, dev)  # logged at the update of the model it scored: the best
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "lid")}
    assert {"lid/confusion.png", "lid/lid.json"} <= artifacts
