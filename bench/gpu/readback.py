"""Reading back what a finished job left: the corpus' clip lengths, the MLflow run id it printed, the metric
history that run logged."""

from __future__ import annotations

import glob
import re
from pathlib import Path


def mean_train_clip_seconds(corpus: Path) -> float | None:
    import pyarrow.parquet as pq

    samples: list[int] = []
    for path in glob.glob(str(corpus / "lang=*" / "split=train" / "*.parquet")):
        samples += pq.read_table(path, columns=["num_samples"]).column("num_samples").to_pylist()
    return sum(samples) / len(samples) / 16_000 if samples else None


def run_id_from(text: str) -> str | None:
    found = re.findall(r"mlflow run: (\S+) \(", text)
    return found[-1] if found and found[-1] != "None" else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))
