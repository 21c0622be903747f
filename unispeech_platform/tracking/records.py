"""The tracking records a best-effort store sends to MLflow or, while the server is away, keeps in the spool
(tracking.spool): one small dataclass per kind, each knowing how to apply itself to the store.

On disk a record is the JSON object ``{"seq", "time", "run_id", "kind", <the kind's fields>}``; ``kind`` and the
field names are the format, so a spool written by an earlier version replays with this one. Adding a kind is a
class here with ``kind`` and ``apply``, and a name in KINDS.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from unispeech_platform.tracking.plots import PLOTTED, loss_plot
from unispeech_platform.tracking.retry import with_retries
from unispeech_platform.tracking.store import RunStore


class RecordTarget(Protocol):
    """What applying a record needs of the store it goes to (tracking.best_effort.BestEffortStore)."""

    uri: str
    store: RunStore
    warn: Callable[[str], None]
    replayed_ends: set[str]

    def stored_steps(self, run_id: str) -> dict[str, int]: ...

    def warn_failed(self, what: str, error: BaseException) -> None: ...


@dataclass(frozen=True)
class Record:
    run_id: str
    kind: ClassVar[str]
    groupable: ClassVar[bool] = False
    """Consecutive records of this kind and run are applied in one request (``apply_all``)."""

    def as_json(self) -> dict[str, Any]:
        """The spool's JSON object (without seq and time, which the spool adds)."""
        fields = dataclasses.asdict(self)
        return {"run_id": fields.pop("run_id"), "kind": self.kind, **fields}

    def apply(self, to: RecordTarget) -> None:
        raise NotImplementedError

    @classmethod
    def apply_all(cls, to: RecordTarget, records: Sequence[Record]) -> None:
        for record in records:
            record.apply(to)


@dataclass(frozen=True)
class Metrics(Record):
    step: int
    metrics: dict[str, float]
    kind: ClassVar[str] = "metrics"
    groupable: ClassVar[bool] = True

    def apply(self, to: RecordTarget) -> None:
        Metrics.apply_all(to, [self])

    @classmethod
    def apply_all(cls, to: RecordTarget, records: Sequence[Record]) -> None:
        """One request; keys at steps the store already holds are dropped (MLflow would keep both). Tried once:
        a failed request may still have landed, and only a replay that reads the stored steps again is sure."""
        run_id = records[0].run_id
        stored = to.stored_steps(run_id)
        after = dict(stored)
        points = []
        for record in records:
            assert isinstance(record, Metrics)
            step = int(record.step)
            fresh = {k: v for k, v in record.metrics.items() if step > after.get(k, -1)}
            after.update(dict.fromkeys(fresh, step))
            if fresh:
                points.append((step, fresh))
        if points:
            with_retries(lambda: to.store.log_metric_points(run_id, points), tries=1)
        stored.update(after)


@dataclass(frozen=True)
class Params(Record):
    params: dict[str, str]
    kind: ClassVar[str] = "params"

    def apply(self, to: RecordTarget) -> None:
        with_retries(lambda: to.store.log_params(self.run_id, self.params))  # skips params already there


@dataclass(frozen=True)
class Tags(Record):
    tags: dict[str, str]
    kind: ClassVar[str] = "tags"

    def apply(self, to: RecordTarget) -> None:
        with_retries(lambda: to.store.set_tags(self.run_id, self.tags))


@dataclass(frozen=True)
class Text(Record):
    text: str
    artifact_file: str
    kind: ClassVar[str] = "text"

    def apply(self, to: RecordTarget) -> None:
        with_retries(lambda: to.store.log_text(self.run_id, self.text, self.artifact_file))


@dataclass(frozen=True)
class Artifacts(Record):
    """A local file or directory: uploaded from where it is when the record is applied."""

    local: str
    artifact_path: str | None
    kind: ClassVar[str] = "artifacts"

    def apply(self, to: RecordTarget) -> None:
        run_id, local, artifact_path = self.run_id, self.local, self.artifact_path
        if os.path.isdir(local):
            with_retries(lambda: to.store.log_artifacts(run_id, local, artifact_path))
        elif os.path.isfile(local):
            with_retries(lambda: to.store.log_artifact(run_id, local, artifact_path))
        else:
            to.warn(f"WARNING: {local} is gone: not uploaded to MLflow run {run_id}")


@dataclass(frozen=True)
class PhoneModel(Record):
    """A CTC export as the run's MLflow Model (tracking.model_logging), registered when a name is given."""

    local: str
    registered_model: str | None = None
    kind: ClassVar[str] = "model"

    def apply(self, to: RecordTarget) -> None:
        from unispeech_platform.tracking.model_logging import log_phone_model

        if not os.path.isdir(self.local):
            to.warn(f"WARNING: {self.local} is gone: no MLflow Model logged for run {self.run_id}")
            return
        with_retries(lambda: log_phone_model(to.uri, self.run_id, self.local, self.registered_model))


@dataclass(frozen=True)
class DatasetInput(Record):
    """A dataset the run read (MLflow's dataset input): ``dataset`` is data.dataset_record.CorpusDataset's dict
    (name, digest, source_type, source, columns, profile); ``context`` e.g. training, validation, evaluation."""

    dataset: dict[str, Any]
    context: str
    kind: ClassVar[str] = "dataset"

    def apply(self, to: RecordTarget) -> None:
        with_retries(lambda: to.store.log_dataset(self.run_id, self.dataset, self.context))


@dataclass(frozen=True)
class Reopen(Record):
    """The run RUNNING again (a job continuing a run whose end was recorded)."""

    kind: ClassVar[str] = "reopen"

    def apply(self, to: RecordTarget) -> None:
        with_retries(lambda: to.store.reopen(self.run_id))


@dataclass(frozen=True)
class End(Record):
    """The loss plot (from the stored curves) and the run's final status."""

    status: str
    kind: ClassVar[str] = "end"

    def apply(self, to: RecordTarget) -> None:
        run_id = self.run_id
        curves = {}
        for key in PLOTTED:
            if points := with_retries(lambda key=key: to.store.metric_history(run_id, key)):
                curves[key] = points
        try:
            png = loss_plot(curves)
        except Exception as e:  # a plot is not worth failing a run's end for
            to.warn_failed("loss plot", e)
            png = None
        if png is not None:
            with_retries(lambda: to.store.log_artifact(run_id, png, "plots"))
        with_retries(lambda: to.store.finish(run_id, self.status))
        to.replayed_ends.add(run_id)


KINDS: dict[str, type[Record]] = {
    cls.kind: cls for cls in (Metrics, Params, Tags, Text, Artifacts, PhoneModel, DatasetInput, Reopen, End)
}


def from_json(data: dict[str, Any]) -> Record:
    """The record a spool line holds (its seq and time are the spool's); ValueError for an unknown kind, KeyError
    or TypeError for a malformed record (never retried: tracking.retry.is_transient)."""
    kind = data["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown tracking record kind {kind!r}")
    cls = KINDS[kind]
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
