"""The experiment's MLflow layout: a parent run, a child run per arm, the arm's pretrain/finetune job runs
nested under it (mlflow.parentRunId tags, so the UI shows the tree)."""

from __future__ import annotations

import time

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_TAG = "unispeech.experiment"


class ExperimentRuns:
    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

    def create(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        all_tags = dict(tags or {})
        if parent:
            all_tags[PARENT_TAG] = parent
        return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def finish(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def ui_url(self, run_id: str) -> str:
        return f"http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{run_id}"
