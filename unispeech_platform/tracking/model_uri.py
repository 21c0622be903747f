"""Models named by MLflow URIs, accepted wherever a job takes a model path (evaluate/model_source.resolve_model):

- ``runs:/<run_id>/<path>``: artifacts of a run, e.g. ``runs:/<run_id>/model``, the MLflow Model a CTC
  fine-tuning logs (tracking/model_logging.py), or a run's uploaded ``export`` or ``evaluation`` artifacts;
- ``models:/<name>/<version>``, ``models:/<name>@<alias>`` (and whatever else MLflow's ``models:/`` takes):
  a registered model version.

The artifacts are downloaded with ``mlflow.artifacts.download_artifacts`` from the tracking store of the job
(``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``: tracking/uri.py; the registry is the same
store) into a temporary directory the job owns, the transformers-format model directory inside is found (a
directory holding ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``: in an MLflow Model of ours
that is ``artifacts/model_dir/``), and its files are moved into a directory the caller claimed in its own output
(runtime/output_paths.py), so nothing is written outside the job's output. The temporary directory is removed
whatever happens.

Every failure (no such run or version, an unreachable server, artifacts without a model, two models where one
was expected) is a ``ModelURIError``: one line naming the URI, exit 3.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from unispeech_core.checkpoint import PT_WEIGHTS_NAME, WEIGHTS_NAME
from unispeech_core.config import CONFIG_NAME
from unispeech_platform.config.redact import redact_uri
from unispeech_platform.config.sections import TrackingSection
from unispeech_platform.runtime.errors import JobSetupError, first_line
from unispeech_platform.runtime.output_paths import OutputDir
from unispeech_platform.tracking.uri import TrackingError, check_reachable, resolve_tracking_uri

SCHEMES = ("runs:/", "models:/")
"""The MLflow URI schemes a model path may use."""
CONNECT_TIMEOUT_S = 10.0
"""How long a job waits for a remote tracking server to answer before it gives up on a model URI."""

Claim = Callable[[str], Path]
"""Where one file of the model goes: its name -> a path in the job's output, recorded there before it exists."""


def claim_in(open_output: Callable[[], OutputDir], *parts: str) -> Claim:
    """A Claim of ``parts/<name>`` in the job's output, opened (so created) on the first call only: after the
    model was downloaded, so a URI that names nothing leaves no directory behind."""
    opened: list[OutputDir] = []

    def claim(name: str) -> Path:
        if not opened:
            opened.append(open_output())
        return opened[0].claim(*parts, name)

    return claim


class ModelURIError(JobSetupError):
    """A model URI that names no usable model: one line naming the URI (exit 3)."""


def is_model_uri(path: str) -> bool:
    """Whether a model path is an MLflow URI (``runs:/...``, ``models:/...``) rather than a local path."""
    return path.startswith(SCHEMES)


def _check_syntax(uri: str) -> None:
    scheme = next(s for s in SCHEMES if uri.startswith(s))
    rest = uri[len(scheme):].strip("/")
    if not rest or (scheme == "runs:/" and not rest.split("/")[0]):
        example = "runs:/<run_id>/model" if scheme == "runs:/" else "models:/<name>/<version> or models:/<name>@<alias>"
        raise ModelURIError(f"model URI {uri!r}: expected {example}")


def find_model_dir(root: Path, uri: str) -> Path:
    """The one transformers-format directory in the downloaded tree (the shallowest; links not followed)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = set(filenames)
        if CONFIG_NAME in names and names & {WEIGHTS_NAME, PT_WEIGHTS_NAME}:
            found.append(Path(dirpath))
    if not found:
        raise ModelURIError(f"model URI {uri!r}: its artifacts hold no model directory ({CONFIG_NAME} with "
                            f"{WEIGHTS_NAME} or {PT_WEIGHTS_NAME})")
    depth = min(len(p.relative_to(root).parts) for p in found)
    top = [p for p in found if len(p.relative_to(root).parts) == depth]
    if len(top) > 1:
        names = ", ".join(p.relative_to(root).as_posix() for p in top)
        raise ModelURIError(f"model URI {uri!r}: its artifacts hold {len(top)} model directories ({names}): "
                            "name one with a longer artifact path")
    return top[0]


def _check_store(uri: str, store: str) -> None:
    """The store answers (a server, within CONNECT_TIMEOUT_S: MLflow's own client retries an absent one for
    minutes) or exists (a sqlite file, a directory store): MLflow would create an empty one, outside the job's
    output, and then find nothing in it."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    if store.startswith(("http://", "https://")):
        try:
            check_reachable(store, CONNECT_TIMEOUT_S)
        except TrackingError as e:
            raise ModelURIError(f"model URI {uri!r}: {e}") from None
        return
    local = store[len("sqlite:///"):] if store.startswith("sqlite:///") else (
        url2pathname(urlparse(store).path) if store.startswith("file:") else None)
    if local is not None and not os.path.exists(local):
        raise ModelURIError(f"model URI {uri!r}: there is no MLflow store at {redact_uri(store)}; set "
                            "MLFLOW_TRACKING_URI (or tracking.uri, --tracking-uri) to the store that holds it")


def _download(uri: str, dst: Path, tracking_uri: str) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri,
                                                        registry_uri=tracking_uri))
    except (MlflowException, OSError, ValueError) as e:
        line = first_line(e, 300, clean=redact_uri)
        raise ModelURIError(f"model URI {uri!r}: cannot download it from {redact_uri(tracking_uri)} ({line})") from None


def fetch_model(uri: str, claim: Claim, tracking_uri: str | None = None) -> Path:
    """Download the model behind ``uri`` and move its files (regular files at the model directory's top level:
    config, weights, vocabulary, processor files, model card, training_run.json) to ``claim(name)``; returns the
    directory they were moved into. ``tracking_uri``: the job's store (None: $MLFLOW_TRACKING_URI, else
    ./mlflow.db). ModelURIError naming the URI otherwise."""
    _check_syntax(uri)
    store = tracking_uri or resolve_tracking_uri(TrackingSection())
    _check_store(uri, store)
    with tempfile.TemporaryDirectory(prefix="unispeech-model-") as tmp:
        local = _download(uri, Path(tmp) / "download", store)
        model_dir = find_model_dir(local if local.is_dir() else local.parent, uri)
        target = None
        for entry in sorted(model_dir.iterdir()):
            if stat.S_ISREG(os.lstat(entry).st_mode):
                dest = claim(entry.name)
                shutil.move(str(entry), str(dest))  # a rename within one filesystem, else a copy
                target = dest.parent
    assert target is not None  # find_model_dir found config.json there
    return target
