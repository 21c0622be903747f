"""Transcribe audio with an exported CTC model: one JSON object per utterance with per-token times.

    python -m jobs.transcribe --model runs/tiny-finetune/model --out out.jsonl audio/ more/*.flac corpus/
    python -m jobs.transcribe --model MODEL_DIR --out out.jsonl --decoder beam --beam-size 32 [--lm tokens.arpa] x.wav
    MLFLOW_TRACKING_URI=http://mlflow:5000 python -m jobs.transcribe --model models:/phones/1 --out out.jsonl x.flac

A runs:/ or models:/ model is downloaded into <out stem>-model/model/ beside --out (where a step_N checkpoint is
converted too).

INPUT: files (any format soundfile reads, any rate, stereo downmixed), directories (searched recursively for
audio files), globs, or a corpus directory (its Parquet rows). Each line: {"path", "text", "tokens":
[{"token", "start", "end"}] (seconds from the CTC frames), "duration", and "id" for corpus rows}.

Fewer than --ray-min-inputs files run in this process without Ray; more run on a Ray Data actor pool (RAY_ADDRESS
or a local Ray; a GPU per actor when the cluster has them). Unreadable files are listed on stderr and skipped:
the exit status is 0 when anything was transcribed, 2 for a bad flag, 3 for a bad model (also one whose outputs
are NaN/inf: nothing is written), when nothing could be read, or for an --out that may not be replaced (an input,
a directory, FIFO, device or link, or a file that is not an earlier transcription without --overwrite) or cannot be
written (disk full): --out then keeps what it held.
"""

from __future__ import annotations

import argparse
import sys

from unispeech_platform.runtime.cli import finite_float, positive_float, positive_int, run_or_exit


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, directories, globs or corpus dirs")
    p.add_argument("--model", required=True, help="exported model dir (config.json, model.safetensors, vocab.json), "
                   "a training job dir, a step_N checkpoint, or an MLflow URI: runs:/<run_id>/model, "
                   "models:/<name>/<version>, models:/<name>@<alias> (from $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--out", required=True, help="JSONL output file, written whole or not at all; never one of the "
                   "inputs, a directory, a FIFO, a device or a link")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that is not an earlier transcription (without it the job refuses)")
    p.add_argument("--decoder", choices=["greedy", "beam"], default="greedy")
    p.add_argument("--beam-size", type=positive_int, default=16)
    p.add_argument("--lm", default=None, help="KenLM n-gram (.arpa/.bin) over the model's tokens (beam only)")
    p.add_argument("--lm-weight", type=finite_float, default=0.5)
    p.add_argument("--batch-size", type=positive_int, default=8, help="audio windows per forward pass")
    p.add_argument("--chunk-seconds", type=positive_float, default=30.0,
                   help="longer audio is cut into windows this long")
    p.add_argument("--ray", choices=["auto", "never", "always"], default="auto",
                   help="auto: Ray Data from --ray-min-inputs inputs on, in-process below")
    p.add_argument("--ray-min-inputs", type=positive_int, default=200)
    p.add_argument("--num-actors", type=positive_int, default=1,
                   help="Ray Data inference actors (each loads the model)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from unispeech_platform.evaluate.transcribe import TranscribeOptions, transcribe

    opts = TranscribeOptions(
        model=a.model, out=a.out, inputs=a.inputs, decoder=a.decoder, beam_size=a.beam_size, lm_path=a.lm,
        lm_weight=a.lm_weight, batch_size=a.batch_size, chunk_seconds=a.chunk_seconds, ray=a.ray,
        ray_min_inputs=a.ray_min_inputs, num_actors=a.num_actors, progress=not a.no_progress, overwrite=a.overwrite,
    )
    summary = run_or_exit(transcribe, opts)
    for f in summary.failures:
        print(f"failed: {f.where}: {f.message()}", file=sys.stderr)
    print(f"transcribed {summary.transcribed} utterances into {a.out}"
          f"{f'; {len(summary.failures)} inputs failed (listed above)' if summary.failures else ''}")
    return summary


if __name__ == "__main__":
    main()
