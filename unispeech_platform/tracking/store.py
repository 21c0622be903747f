"""RunStore: the platform's one door to MLflow. Every package that records runs (train, evaluate, tune,
experiments) goes through it; nothing else imports mlflow (an import-linter contract checks that).

It speaks in run ids and plain dicts: get-or-create experiments, create / find / reopen runs (nested through
``mlflow.parentRunId``), params, metrics, tags, text and artifacts in batches, metric histories, finish.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from unispeech_platform.config.redact import redact_uri

PARENT_TAG = "mlflow.parentRunId"
"""The tag MLflow's UI nests runs by."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Without a kind, MLflow 3.x's UI opens an experiment on its GenAI traces overview instead of the runs table."""
UI_WORKFLOW = "workflowType=machine_learning"
"""MLflow 3.17's UI picks GenAI or model-training pages from its sidebar switch (remembered in the browser, GenAI
by default) or this URL query, not from the experiment's kind: links we print carry it."""
JOB_TAG = "unispeech.job"
"""Names the job (checkpoint.name) a run belongs to, so a resumed job reopens its run."""
PARAM_BATCH, METRIC_BATCH, PARAM_MAX_CHARS = 100, 1000, 6000
_MLFLOW_TYPES = {"string": "string", "large_string": "string", "binary": "binary", "large_binary": "binary",
                 "int32": "integer", "int64": "long", "float": "float", "double": "double", "bool": "boolean"}
"""Arrow type names -> MLflow column-spec types (a dataset input's schema)."""


def context_tags(tags: dict[str, str] | None = None) -> dict[str, str]:
    """``tags`` over the tags ``mlflow.start_run`` sets from MLflow's run-context registry: ``mlflow.user``,
    ``mlflow.source.name`` (the job's entry point, sys.argv[0]) and ``mlflow.source.type``, the git commit, branch
    and repository of that entry point's checkout when there is one, and the tags of ``$MLFLOW_RUN_CONTEXT`` (a
    JSON object). A repository URL's login is redacted: credentials never reach MLflow."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_REPO_URL

    resolved = {k: str(v) for k, v in resolve_tags(tags or {}).items()}
    if MLFLOW_GIT_REPO_URL in resolved:
        resolved[MLFLOW_GIT_REPO_URL] = redact_uri(resolved[MLFLOW_GIT_REPO_URL])
    return resolved


def ui_path(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI path (after the server's address) of an experiment's runs table or of one run."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"/#/experiments/{experiment_id}{run}?{UI_WORKFLOW}"


def run_line(run_id: str | None, uri: str | None) -> str:
    """The console line naming a job's MLflow run and store (the store's login redacted)."""
    return f"mlflow run: {run_id} ({redact_uri(str(uri))})"


class RunStore:
    def __init__(self, uri: str):
        # MLflow prints "View run ... at: <tracking URI>" when a run ends: that URI may carry user:password, and
        # the links we print ourselves open the right UI pages (ui_path).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    # -- experiments and runs --------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (as a model-development experiment) when missing."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def create_run(self, experiment_id: str, name: str, *, parent: str | None = None,
                   tags: dict[str, str] | None = None) -> str:
        """A new run with the tags ``mlflow.start_run`` would give it (context_tags) plus ``tags``."""
        all_tags = context_tags({**(tags or {}), **({PARENT_TAG: parent} if parent else {})})
        return self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id

    def find_runs(self, experiment_id: str, tags: dict[str, str]) -> list[Any]:
        """Runs whose tags equal ``tags``, newest first."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs([experiment_id], filter_string=query,
                                       order_by=["attributes.start_time DESC"])

    def reopen(self, run_id: str) -> str:
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def schedule(self, run_id: str) -> str:
        """Mark a run created ahead of its work SCHEDULED (its job marks it RUNNING when it starts)."""
        self.client.update_run(run_id, status="SCHEDULED")
        return run_id

    def open_job_run(self, experiment: str, job_name: str, run_name: str | None, *, resume: bool,
                     given: str | None = None) -> str:
        """A job's run: ``given`` (an existing run, e.g. $MLFLOW_RUN_ID) reopened and tagged with the job name,
        else with ``resume`` the newest run of this job name reopened (same id), else a new one."""
        if given:
            self.client.get_run(given)  # a run that is not in this store fails the job's start
            self.set_tags(given, {JOB_TAG: job_name})
            return self.reopen(given)
        exp_id = self.experiment_id(experiment)
        if resume:
            runs = self.find_runs(exp_id, {JOB_TAG: job_name})
            if runs:
                return self.reopen(runs[0].info.run_id)
        return self.create_run(exp_id, run_name or job_name, tags={JOB_TAG: job_name})

    def exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def run(self, run_id: str) -> Any:
        """The run (info + data: params, metrics, tags)."""
        return self.client.get_run(run_id)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- data ------------------------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params not yet on the run (MLflow refuses to change one), values cut to MLflow's length limit."""
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        items = [Param(k, str(v)[:PARAM_MAX_CHARS]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i : i + PARAM_BATCH])

    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
        """Finite values only (a NaN would break every chart of the key)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for i in range(0, len(batch), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=batch[i : i + METRIC_BATCH])

    def log_metric_points(self, run_id: str, points: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics of several steps in as few requests as possible (finite values only)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for step, metrics in points for k, v in metrics.items()
                 if v is not None and math.isfinite(v)]
        for i in range(0, len(batch), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=batch[i : i + METRIC_BATCH])

    def latest_steps(self, run_id: str) -> dict[str, int]:
        """The highest step stored for each metric key of the run, in one request (MLflow keeps each key's latest
        metric as the max of (step, timestamp, value), and get_run returns it with its step)."""
        return {m.key: m.step for m in self.client.get_run(run_id).data.to_proto().metrics}

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dataset(self, run_id: str, dataset: dict[str, Any], context: str) -> None:
        """One dataset input (MLflow's ``log_input``): ``dataset`` holds name, digest, source_type, source (JSON),
        columns ([name, Arrow type] pairs, sent as an MLflow column-spec schema) and profile (sent as JSON)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        schema = {"mlflow_colspec": [{"type": _MLFLOW_TYPES.get(kind, "binary"), "name": name, "required": False}
                                     for name, kind in dataset.get("columns", [])]}
        entity = Dataset(name=dataset["name"], digest=dataset["digest"], source_type=dataset["source_type"],
                         source=dataset["source"], schema=json.dumps(schema), profile=json.dumps(dataset["profile"]))
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_artifact(self, run_id: str, local_file: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, local_file, artifact_path)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
