"""Export a model for serving outside the platform: a transformers-format directory, or an ONNX graph checked
against PyTorch with onnxruntime.

MODEL: an exported model dir (config.json, model.safetensors, vocab.json), a training job dir, a step_N
checkpoint (converted), or an MLflow URI: runs:/<run_id>/<path> or models:/<name>/<version> (models:/<name>@<alias>),
downloaded from --tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db.

hf: the model directory (weights, config.json, vocab.json, processor files, model card), loadable by
transformers' from_pretrained and pipeline("automatic-speech-recognition"). onnx (a UniSpeechForCTC model):
model.onnx (input "waveform" float32 [batch, samples], 16 kHz mono, normalised inside the graph; output "logits"
[batch, frames, vocab]; dynamic batch and length) with config.json and vocab.json beside it. The graph is kept
only when onnxruntime's logits are within 1e-4 (max abs, fp32) of PyTorch's on real audio (--audio files, else
a built-in FLAC clip), decoded by the platform's own decode path; the difference is printed.

Exit status: 0 exported; 2 a bad flag; 3 a bad model or URI, unreadable --audio, an ONNX graph that misses the
tolerance, or an --out that may not be written (a file, link or FIFO; a non-empty directory that is not an earlier
export, without --overwrite; an input of the job). A failed export leaves --out as it was.
"""

from __future__ import annotations

import argparse

from unispeech_platform.runtime.cli import run_or_exit
from unispeech_platform.runtime.job_flags import flags_parser, start_flags_job

EXAMPLES = (
    "--model runs/tiny-finetune/model --format onnx --out exported/tiny-onnx",
    "--model models:/phones/1 --format hf --out exported/phones-v1",
    "--model runs:/0123456789abcdef/model --format onnx --out exported/x --audio my.flac",
)


def parser() -> argparse.ArgumentParser:
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("--model", required=True, help="model dir, training job dir, step_N checkpoint, "
                   "runs:/<run_id>/<path> or models:/<name>/<version|@alias>")
    p.add_argument("--format", required=True, choices=["onnx", "hf"],
                   help="onnx: model.onnx checked against PyTorch; hf: the transformers-format directory")
    p.add_argument("--out", required=True, help="output directory (created; marked as this job's)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out that is not an earlier export (its contents stay)")
    p.add_argument("--audio", nargs="+", default=[], metavar="FILE",
                   help="audio files for the ONNX parity check (default: a built-in FLAC clip)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store of a runs:/ or models:/ model "
                   "(default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value)."""
    return parser().parse_args(argv)


def main(argv: list[str] | None = None):
    a = start_flags_job(parser(), parse(argv))

    from unispeech_platform.export.job import ExportOptions, run_export

    opts = ExportOptions(model=a.model, out=a.out, format=a.format, audio=tuple(a.audio), overwrite=a.overwrite,
                         tracking_uri=a.tracking_uri)
    result = run_or_exit(run_export, opts)
    print(f"exported {result.model.path} as {a.format} into {result.out_dir}: {', '.join(result.files)}")
    return result


if __name__ == "__main__":
    main()
