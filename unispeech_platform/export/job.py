"""``python -m jobs.export``: resolve the model (a directory, training checkpoint, run directory or MLflow URI),
write it in the asked format into a staging directory inside ``--out``, check it, and only then move it in.

``--out`` follows runtime/output_paths.py: created if missing, marked as this job's; a non-empty directory that
is not an earlier export is refused unless ``--overwrite`` (the export is then written beside its contents, which
stay); a name the export needs that is taken by an entry the job did not make is refused before anything is
written. An earlier export of ours there is replaced (its files the new export does not have are removed). A
failed export (a model that does not load, an ONNX graph that misses the parity tolerance, a full disk) leaves
``--out`` as it was: the staging directory is removed, and a ``--out`` the job created is removed too.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.evaluate.model_source import ResolvedModel, check_model_dir, resolve_model
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.output_parent import check_output_parent
from unispeech_platform.runtime.output_paths import MARKER, OutputDir, open_output_dir

EXPORT_JOB = "export"
"""The marker's job name of an export's output directory."""
FORMATS = ("onnx", "hf")
STAGING = ".export-staging"
"""Inside --out: where an export is written and checked before its files are moved in."""
SIDE_FILES = ("config.json", "vocab.json", "preprocessor_config.json", "tokenizer_config.json",
              "special_tokens_map.json", "README.md", "training_run.json")
"""What an ONNX export carries beside the graph from the model directory (when there): the architecture, the
vocabulary that decodes the logits, the processor files, the model card and the training run."""


class ExportRefusedError(JobSetupError):
    """The exported model does not behave as the original (ONNX parity): nothing is written (exit 3)."""


@dataclass(frozen=True)
class ExportOptions:
    model: str
    out: str
    format: str
    audio: tuple[str, ...] = ()
    """Audio files the ONNX parity check runs on (default: a built-in FLAC clip)."""
    overwrite: bool = False
    tracking_uri: str | None = None
    """Where a runs:/ or models:/ model comes from (None: $MLFLOW_TRACKING_URI, else ./mlflow.db)."""


@dataclass
class ExportResult:
    out_dir: str
    files: list[str]
    model: ResolvedModel
    max_abs_diff: float | None = None
    """ONNX only: the largest absolute logit difference to PyTorch over the parity clips."""


def _parity_clips(paths: tuple[str, ...]) -> list:
    """16 kHz waveforms of the --audio files (their first 30 s), else of the built-in FLAC clip."""
    from unispeech_platform.data.audio_file import AudioFileError, read_audio_file
    from unispeech_platform.export.onnx_model import (
        MAX_PARITY_SECONDS,
        MIN_PARITY_SECONDS,
        builtin_clip,
        decoded_clip,
    )

    if not paths:
        return [decoded_clip(builtin_clip(), "the built-in parity clip")]
    clips = []
    for path in paths:
        try:
            wave = decoded_clip(read_audio_file(path), path)
        except (AudioFileError, ValueError) as e:
            raise JobSetupError(f"--audio {e}") from None
        if len(wave) < MIN_PARITY_SECONDS * 16_000:
            raise JobSetupError(f"--audio {path}: {len(wave) / 16_000:.3f} s, shorter than {MIN_PARITY_SECONDS} s")
        clips.append(wave[: int(MAX_PARITY_SECONDS * 16_000)])
    return clips


def _write_hf(model: ResolvedModel, output: OutputDir) -> list[str]:
    """Every regular file at the top of the model directory (weights, config, vocabulary, processor files, card)."""
    names = []
    for entry in sorted(Path(model.model_dir).iterdir()):
        if stat.S_ISREG(os.lstat(entry).st_mode) and entry.name != MARKER:
            shutil.copyfile(entry, output.claim(STAGING, entry.name))
            names.append(entry.name)
    check_model_dir(output.root / STAGING, need_vocab="vocab.json" in names)  # the copy is a complete model
    return names


def _write_onnx(model: ResolvedModel, output: OutputDir, audio: tuple[str, ...]) -> tuple[list[str], float]:
    from unispeech_platform.export import onnx_model
    from unispeech_platform.export.onnx_model import ONNX_NAME, check_parity, export_onnx

    if model.architecture != "UniSpeechForCTC":
        raise JobSetupError(f"{model.model_dir}: a {model.architecture}; the ONNX export takes a UniSpeechForCTC model")
    clips = _parity_clips(audio)  # unreadable audio stops the job before the export's minutes
    graph = output.claim(STAGING, ONNX_NAME)
    export_onnx(model.model_dir, graph)
    parity = check_parity(model.model_dir, graph, clips)
    tolerance = onnx_model.PARITY_TOLERANCE
    print(f"ONNX parity: max abs logit diff {parity.max_abs_diff:.3g} over {parity.clips} clip(s) and a batch of 2 "
          f"(tolerance {tolerance:g}, fp32)", flush=True)
    if not parity.ok(tolerance):
        raise ExportRefusedError(f"ONNX export of {model.path} refused: max abs logit diff {parity.max_abs_diff:.3g} "
                                 f"> {tolerance:g} against PyTorch; nothing was written")
    names = [ONNX_NAME]
    for name in SIDE_FILES:
        if (Path(model.model_dir) / name).is_file():
            shutil.copyfile(Path(model.model_dir) / name, output.claim(STAGING, name))
            names.append(name)
    return names, parity.max_abs_diff


def _move_in(output: OutputDir, names: list[str]) -> None:
    """The staged files into --out, replacing an earlier export's (whose other files are removed)."""
    output.check_free(*names)
    stale = [rel for rel in output.made if "/" not in rel and rel != STAGING and rel not in names]
    output.remove_made(only=stale)
    for name in names:
        os.replace(output.root / STAGING / name, output.claim(name))
    output.remove_made(only=[STAGING])


def _undo(output: OutputDir, created: bool) -> None:
    """After a failure: the staging directory goes; so does a --out the job created (and a marker listing nothing)."""
    output.remove_made(only=[STAGING])
    if not output.made:
        (output.root / MARKER).unlink(missing_ok=True)
        if created and not any(output.root.iterdir()):
            output.root.rmdir()


def run_export(opts: ExportOptions) -> ExportResult:
    """Export ``opts.model`` as ``opts.format`` into ``opts.out`` (raises JobSetupError, nothing written, for a
    bad model, output, audio or a failed parity check)."""
    from unispeech_platform.tracking.model_uri import is_model_uri

    if opts.format not in FORMATS:
        raise JobSetupError(f"--format {opts.format!r}: expected one of {', '.join(FORMATS)}")
    check_output_parent(opts.out, "--out", makes_parents=True, is_file=False)
    created = not os.path.lexists(opts.out)
    inputs = [*([] if is_model_uri(opts.model) else [opts.model]), *opts.audio]
    output, _ = open_output_dir(opts.out, EXPORT_JOB, overwrite=opts.overwrite, inputs=inputs)
    try:
        with tempfile.TemporaryDirectory(prefix="unispeech-export-") as work:
            model = resolve_model(opts.model, lambda: open_output_dir(work, EXPORT_JOB, overwrite=None,
                                                                      flag="the export's work directory")[0],
                                  tracking_uri=opts.tracking_uri)
            output.claim(STAGING, directory=True)
            diff = None
            if opts.format == "hf":
                names = _write_hf(model, output)
            else:
                names, diff = _write_onnx(model, output, opts.audio)
            _move_in(output, names)
    except BaseException:
        _undo(output, created)
        raise
    return ExportResult(str(output.root), names, model, diff)
