"""Log a CTC export as an MLflow Model at ``runs:/<run_id>/model`` and, when asked, register it.

The pyfunc (tracking/phone_model.py, "model from code") carries the export directory as its artifact and
``unispeech_core`` as its code, with a signature (optional ``waveform`` float arrays, ``audio`` file bytes or
``path`` columns in, phone strings out; params ``decoder``, ``beam_size``, ``batch_size``) and an input example:
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` need nothing of this platform.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

MODEL_PATH = "model"
"""Where the MLflow Model of a fine-tuning run lives: ``runs:/<run_id>/model``."""
EXAMPLE_SAMPLES = 1600
"""The input example: 0.1 s of a 16 kHz tone (small, but longer than the feature encoder's receptive field)."""


def _requirements() -> list[str]:
    """What the pyfunc imports, pinned to this environment's versions (flashlight-text, the beam search's decoder,
    when installed)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("mlflow", "torch", "torchaudio", "soundfile", "numpy", "pandas", "safetensors", "flashlight-text"):
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")  # a local build tag (+cpu) is no pip version
        except PackageNotFoundError:
            if name != "flashlight-text":
                raise
    return pins


def signature_and_example():
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    from unispeech_platform.tracking.phone_model import AUDIO_COLUMN, DEFAULTS, INPUT_COLUMN, PATH_COLUMN

    inputs = Schema([ColSpec(Array(DataType.double), INPUT_COLUMN, required=False),
                     ColSpec(DataType.binary, AUDIO_COLUMN, required=False),
                     ColSpec(DataType.string, PATH_COLUMN, required=False)])
    params = ParamSchema([ParamSpec("decoder", DataType.string, DEFAULTS["decoder"]),
                          ParamSpec("beam_size", DataType.long, DEFAULTS["beam_size"]),
                          ParamSpec("batch_size", DataType.long, DEFAULTS["batch_size"])])
    signature = ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.string)]), params=params)
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(EXAMPLE_SAMPLES) / 16_000)
    return signature, pd.DataFrame({INPUT_COLUMN: [tone.tolist()]})


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """The fluent API's tracking URI for the duration (log_model has no client form); the previous one back."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before) if before is not None else mlflow.set_tracking_uri("")


def log_phone_model(uri: str, run_id: str, model_dir: str, registered_model: str | None = None) -> str:
    """Log ``model_dir`` (a CTC export: config.json, weights, vocab.json) as the run's MLflow Model; register it
    as a new version of ``registered_model`` when given. Returns the model's URI (``runs:/<run_id>/model``)."""
    import mlflow

    import unispeech_core
    from unispeech_platform.tracking import phone_model

    if not os.path.isfile(os.path.join(model_dir, "vocab.json")):
        raise FileNotFoundError(f"{model_dir}: no vocab.json: not a CTC model export")
    signature, example = signature_and_example()
    with _tracking_uri(uri), mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(
            name=MODEL_PATH,
            python_model=phone_model.__file__,
            artifacts={phone_model.MODEL_ARTIFACT: str(Path(model_dir).resolve())},
            code_paths=[str(Path(unispeech_core.__file__).parent)],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=registered_model,
        )
    return f"runs:/{run_id}/{MODEL_PATH}"
