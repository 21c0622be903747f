"""Import the data you have into the corpus layout: Hugging Face ``datasets`` Parquet, TSV/CSV/JSONL
manifests, fairseq wav2vec manifests or Kaldi data directories (docs/data.md#import-your-data).

Audio is decoded, checked and stored as 16 kHz mono FLAC; splits are mapped from the source (validation ->
dev, train.clean.100 -> train) unless --split puts every row in one. --targets phones: espeak-ng G2P of the
text; --targets chars: characters, words joined by '|'; phones the source already has are kept. Rows are
converted on a local process pool, or as Ray tasks over the whole cluster under `ray job submit` (--executor).
Words the G2P does not know are listed at the end and in summary.json. Every row
that cannot be imported is printed and listed with its reason in <out>/import_report.tsv; a table of what was
imported ends the run. Exit status: 0 all rows imported, 1 some rows failed (the rest imported), 2 bad flags,
3 unusable input (named with its file and column; a manifest, Kaldi table or label file that is not UTF-8 is
named with its line and byte offset before any row is imported) or output (--out not empty and not made by a
corpus job, an input, or an entry there the job did not make; docs/data.md#where-a-job-writes).

--lang is one language, not a list: it labels every row (the other corpus jobs' --langs selects several).
"""

from __future__ import annotations

import argparse

from unispeech_platform.data.audio_file import MAX_AUDIO_BYTES, READ_TIMEOUT_S, AudioLimits
from unispeech_platform.data.importers.common import TARGETS
from unispeech_platform.data.importers.executors import EXECUTORS
from unispeech_platform.data.importers.sources import COLUMNS, READERS, import_source
from unispeech_platform.runtime.cli import positive_int, run_or_exit, voice_pairs
from unispeech_platform.runtime.job_flags import (
    add_corpus_overwrite_flag,
    alias,
    flags_parser,
    start_flags_job,
)
from unispeech_platform.runtime.output_paths import component_problem

EXAMPLES = (
    "--format hf --input hf/librispeech_asr/clean --out data/ls --lang en-us --targets phones",
    "--format manifest --input clips.tsv --out data/mine --lang de --targets chars",
    "--format fairseq --input manifests/ --out data/fs --lang en-us",
    "--format kaldi --input data/train --out data/kaldi --lang en-us --split train",
    "--format hf --input cv.parquet --out data/cvhf --targets phones --voices en=en-gb,pt=pt-br --workers 4",
)


def parser() -> argparse.ArgumentParser:
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("--format", required=True, choices=sorted(READERS), help="the source's layout")
    p.add_argument("--input", required=True, help="Parquet file/dir, manifest file, fairseq .tsv/dir, Kaldi dir")
    p.add_argument("--out", required=True, help="corpus root to write: a local path or a URI (s3://, gs://: built locally, "
                   "then uploaded to an empty prefix, docs/data.md#object-storage)")
    p.add_argument("--lang", default=None,
                   help="language code of every row (default: the source's language column); one code, not a "
                        "list: it labels rows, where --langs of the other corpus jobs selects languages")
    p.add_argument("--split", default=None, help="put every row in this split (default: mapped from the source)")
    p.add_argument("--targets", choices=TARGETS, default=None,
                   help="labels to derive from the text where the source has no phones (default: none; "
                        "rows without phones stay unlabeled, for pretraining)")
    p.add_argument("--voices", "--voice", dest="voices", type=voice_pairs, default={},
                   help="espeak-ng voice per language for --targets phones, e.g. en=en-gb,pt=pt-br" + alias("--voice"))
    for col in COLUMNS:
        p.add_argument(f"--{col}-column", default=None, help=f"the source's {col} column (default: guessed)")
    p.add_argument("--keep-original", action="store_true",
                   help="store the source's encoded bytes instead of 16 kHz mono FLAC (not with segments)")
    p.add_argument("--executor", choices=EXECUTORS, default="auto",
                   help="where rows are decoded, labeled and transcoded: processes (a local pool of --workers), "
                        "ray (tasks over the whole Ray cluster; the audio is read here and shipped) or auto "
                        "(ray when RAY_ADDRESS names a cluster, as under `ray job submit`; else processes)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="decode processes of --executor processes (default: all cores)")
    p.add_argument("--max-audio-mb", type=float, default=MAX_AUDIO_BYTES / 2**20,
                   help="an audio file a row names by path that is larger is not read: its row fails "
                        "(audio_file_too_large; in MiB)")
    p.add_argument("--audio-read-timeout", type=float, default=READ_TIMEOUT_S,
                   help="seconds to read one such audio file before its row fails (audio_read_timeout)")
    add_corpus_overwrite_flag(p)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value)."""
    p = parser()
    a = p.parse_args(argv)
    for flag, value in (("--lang", a.lang), ("--split", a.split)):
        problem = None if value is None else component_problem(value)
        if problem:  # it names the partition directory lang=<lang>/split=<split> under --out
            p.error(f"{flag}: {problem}")
    if not (0 < a.max_audio_mb < float("inf")) or not (0 < a.audio_read_timeout < float("inf")):
        p.error("--max-audio-mb and --audio-read-timeout must be positive numbers")
    return a


def main(argv: list[str] | None = None) -> int:
    a = start_flags_job(parser(), parse(argv))
    _, failures = run_or_exit(
        import_source, a.format, a.input, a.out, lang=a.lang, split=a.split,
        columns={col: getattr(a, f"{col}_column") for col in COLUMNS}, targets=a.targets, voices=a.voices,
        keep_original=a.keep_original, executor=a.executor, workers=a.workers, overwrite=a.overwrite,
        progress=not a.no_progress,
        limits=AudioLimits(int(a.max_audio_mb * 2**20), a.audio_read_timeout),
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
