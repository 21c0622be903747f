"""Transcribe audio with an exported CTC model: one JSON object per utterance with per-token times.

--model takes a model dir, a training job dir, a step_N checkpoint, or an MLflow URI (runs:/<run_id>/model,
models:/<name>/<version>, with MLFLOW_TRACKING_URI): a URI is downloaded into <out stem>-model/model/ beside --out
(where a step_N checkpoint is converted too).

INPUT (positional, unlike the other jobs' --input: many of them, as the shell expands a glob): files (any format
soundfile reads, any rate, stereo downmixed), directories (searched recursively for
audio files), globs, or a corpus directory (its Parquet rows). Each line: {"path", "text", "tokens":
[{"token", "start", "end"}] (seconds from the CTC frames), "duration", and "id" for corpus rows}.

Audio longer than --chunk-seconds is decoded in windows that overlap by --chunk-overlap-seconds: each frame is
taken from the window where it lies farthest from an edge and the whole file is decoded at once (no token doubled
or lost at a cut, no tail dropped). A group-norm model (feat_extract_norm: group) is never given padded input.

With --executor auto, fewer than --ray-min-inputs files run in this process without Ray; more run on a Ray Data actor
pool (RAY_ADDRESS or a local Ray; a GPU per actor when the cluster has them). --num-actors counts those actors, not
worker processes (each holds a copy of the model: the evaluate job's evaluate.num_actors). Unreadable files are listed on stderr and skipped:
the exit status is 0 when anything was transcribed, 2 for a bad flag, 3 for a bad model (also one whose outputs
are NaN/inf: nothing is written), when nothing could be read, or for an --out that may not be replaced (an input,
a directory, FIFO, device or link, or a file that is not an earlier transcription without --overwrite) or cannot be
written (disk full): --out then keeps what it held.
"""

from __future__ import annotations

import argparse
import sys

from unispeech_platform.runtime.cli import (
    finite_float,
    non_negative_float,
    positive_float,
    positive_int,
    run_or_exit,
)
from unispeech_platform.runtime.job_flags import flags_parser, start_flags_job

EXAMPLES = (
    "--model runs/tiny-finetune/model --out out.jsonl audio/ more/a.flac corpus/",
    "--model runs/tiny-finetune/model --out out.jsonl --decoder beam --beam-size 32 --lm tokens.arpa x.wav",
    "--model runs/tiny-finetune --out out.jsonl --executor ray --num-actors 4 --no-progress recordings/",
    "--model models:/phones/1 --out out.jsonl x.flac",
)
EXECUTOR_TO_RAY = {"auto": "auto", "local": "never", "ray": "always"}
"""--executor (the name every job uses) -> TranscribeOptions.ray."""
OLD_RAY_FLAG = {ray: executor for executor, ray in EXECUTOR_TO_RAY.items()}
"""--ray auto|never|always, the old spelling, -> --executor."""


class OldRayFlag(argparse.Action):
    """``--ray never|always|auto``: sets --executor (local|ray|auto), so old command lines keep working."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, OLD_RAY_FLAG[values])


def parser() -> argparse.ArgumentParser:
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, directories, globs or corpus dirs")
    p.add_argument("--model", required=True, help="exported model dir (config.json, model.safetensors, vocab.json), "
                   "a training job dir, a step_N checkpoint, or an MLflow URI: runs:/<run_id>/model, "
                   "models:/<name>/<version>, models:/<name>@<alias> (from $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--out", required=True, help="JSONL output file, written whole or not at all; never one of the "
                   "inputs, a directory, a FIFO, a device or a link")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that is not an earlier transcription (without it the job refuses)")
    p.add_argument("--decoder", choices=["greedy", "beam"], default="greedy",
                   help="greedy CTC or beam search (torchaudio's CTC decoder)")
    p.add_argument("--beam-size", type=positive_int, default=16, help="hypotheses kept per frame (beam only)")
    p.add_argument("--lm", default=None, help="KenLM n-gram (.arpa/.bin) over the model's tokens (beam only)")
    p.add_argument("--lm-weight", type=finite_float, default=0.5, help="weight of the --lm score (beam only)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="audio windows per forward pass")
    p.add_argument("--chunk-seconds", type=positive_float, default=30.0,
                   help="longer audio is decoded in overlapping windows this long (at least 1 s); the last window "
                   "runs to the end of the file")
    p.add_argument("--chunk-overlap-seconds", type=non_negative_float, default=None,
                   help="seconds consecutive windows share, less than half of --chunk-seconds (default: 5, at most "
                   "a quarter of --chunk-seconds; 0 still shares one frame's 40 ms); each frame is taken from the "
                   "window where it lies farthest from an edge, and the whole file is decoded at once")
    p.add_argument("--executor", choices=EXECUTOR_TO_RAY, default="auto",
                   help="local (this process, no Ray), ray (a Ray Data actor pool) or auto (ray from "
                        "--ray-min-inputs inputs on, local below)")
    p.add_argument("--ray", dest="executor", choices=OLD_RAY_FLAG, action=OldRayFlag, default=argparse.SUPPRESS,
                   help="the old spelling of --executor (never = local, always = ray), still accepted")
    p.add_argument("--ray-min-inputs", type=positive_int, default=200,
                   help="inputs from which --executor auto uses Ray")
    p.add_argument("--num-actors", type=positive_int, default=1,
                   help="Ray Data inference actors (each loads the model)")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value)."""
    p = parser()
    a = p.parse_args(argv)
    if a.chunk_overlap_seconds is not None and 2 * a.chunk_overlap_seconds >= max(a.chunk_seconds, 1.0):
        p.error(f"--chunk-overlap-seconds {a.chunk_overlap_seconds:g}: must be less than half of --chunk-seconds")
    return a


def main(argv: list[str] | None = None):
    a = start_flags_job(parser(), parse(argv))
    from unispeech_platform.evaluate.transcribe import TranscribeOptions, transcribe

    opts = TranscribeOptions(
        model=a.model, out=a.out, inputs=a.inputs, decoder=a.decoder, beam_size=a.beam_size, lm_path=a.lm,
        lm_weight=a.lm_weight, batch_size=a.batch_size, chunk_seconds=a.chunk_seconds,
        chunk_overlap_seconds=a.chunk_overlap_seconds, ray=EXECUTOR_TO_RAY[a.executor], ray_min_inputs=a.ray_min_inputs, num_actors=a.num_actors,
        progress=not a.no_progress, overwrite=a.overwrite,
    )
    summary = run_or_exit(transcribe, opts)
    for f in summary.failures:
        print(f"failed: {f.where}: {f.message()}", file=sys.stderr)
    print(f"transcribed {summary.transcribed} utterances into {a.out}"
          f"{f'; {len(summary.failures)} inputs failed (listed above)' if summary.failures else ''}")
    return summary


if __name__ == "__main__":
    main()
