"""Convert a Common Voice release into the corpus layout, phones from espeak-ng G2P of each sentence
(the Common Voice reader of the importers every `jobs.import_dataset` source uses, docs/data.md#common-voice-import).

Clips that fail (missing, undecodable, too short, empty sentence, G2P language switch, ...) are printed and
listed with their reason in <out>/import_report.tsv. Exit status 1 when any clip failed, 2 bad flags,
3 unusable input (a missing language directory or TSV column, no voice for a language) or output (as
jobs.import_dataset: docs/data.md#where-a-job-writes).
"""

from __future__ import annotations

import argparse

from unispeech_platform.data.importers.commonvoice import import_commonvoice
from unispeech_platform.data.importers.executors import EXECUTORS
from unispeech_platform.runtime.cli import comma_list, positive_int, run_or_exit, voice_pairs
from unispeech_platform.runtime.job_flags import (
    add_corpus_overwrite_flag,
    alias,
    flags_parser,
    start_flags_job,
)
from unispeech_platform.runtime.output_paths import component_problem

EXAMPLES = (
    "--input cv-corpus-17.0 --langs es,en --out data/cv --voices en=en-us",
    "--input cv-corpus-17.0 --langs sv-SE --out data/cv-sv --validated-extra --executor processes --workers 4",
)


def parser() -> argparse.ArgumentParser:
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("--input", "--cv-dir", dest="input", required=True,
                   help="release directory holding <lang>/clips and <lang>/*.tsv" + alias("--cv-dir"))
    p.add_argument("--langs", type=comma_list, required=True,
                   help="comma-separated Common Voice locales (e.g. es,en,sv-SE)")
    p.add_argument("--out", required=True, help="corpus root to write (a local path or an empty s3:// prefix)")
    p.add_argument(
        "--voices", type=voice_pairs, default={}, help="espeak-ng voice per locale, e.g. en=en-us,pt=pt"
    )
    p.add_argument(
        "--validated-extra",
        action="store_true",
        help="add validated.tsv rows in no split to train (dev/test speakers excluded)",
    )
    p.add_argument("--keep-original", action="store_true", help="store the MP3 bytes instead of 16 kHz FLAC")
    p.add_argument("--executor", choices=EXECUTORS, default="auto",
                   help="processes (a local pool of --workers), ray (tasks over the Ray cluster) or auto "
                        "(ray when RAY_ADDRESS names a cluster, else processes)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    add_corpus_overwrite_flag(p)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value)."""
    p = parser()
    a = p.parse_args(argv)
    for lang in a.langs:
        problem = component_problem(lang)
        if problem:  # a locale names <input>/<lang> and the partition lang=<lang> under --out
            p.error(f"--langs: {problem}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = start_flags_job(parser(), parse(argv))
    _, failures = run_or_exit(
        import_commonvoice,
        a.input,
        a.langs,
        a.out,
        voices=a.voices,
        validated_extra=a.validated_extra,
        keep_original=a.keep_original,
        executor=a.executor,
        workers=a.workers,
        overwrite=a.overwrite,
        progress=not a.no_progress,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
