"""Convert a Common Voice release into the corpus layout, phones from espeak-ng G2P of each sentence
(the Common Voice reader of the importers every `jobs.import_dataset` source uses, docs/data.md#common-voice-import).

    python -m jobs.import_commonvoice --cv-dir cv-corpus-17.0 --langs es,en --out data/cv [--voices en=en-us]

Clips that fail (missing, undecodable, too short, empty sentence, G2P language switch, ...) are printed and
listed with their reason in <out>/import_report.tsv. Exit status 1 when any clip failed, 2 bad flags,
3 unusable input (a missing language directory or TSV column, no voice for a language) or output (as
jobs.import_dataset: docs/data.md#where-a-job-writes).
"""

from __future__ import annotations

import argparse

from jobs.import_dataset import voice_pairs
from unispeech_platform.data.importers.commonvoice import import_commonvoice
from unispeech_platform.data.importers.executors import EXECUTORS
from unispeech_platform.runtime.cli import positive_int, run_or_exit
from unispeech_platform.runtime.output_paths import component_problem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv-dir", required=True, help="release directory holding <lang>/clips and <lang>/*.tsv")
    p.add_argument("--langs", required=True, help="comma-separated Common Voice locales (e.g. es,en,sv-SE)")
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
    p.add_argument("--overwrite", action="store_true",
                   help="replace a corpus made with other arguments, or write into a non-empty directory this job "
                        "did not make (only what the job made is ever removed: docs/data.md#where-a-job-writes)")
    a = p.parse_args(argv)
    langs = [x.strip() for x in a.langs.split(",") if x.strip()]
    for lang in langs:
        problem = component_problem(lang)
        if problem:  # a locale names <cv-dir>/<lang> and the partition lang=<lang> under --out
            p.error(f"--langs: {problem}")
    _, failures = run_or_exit(
        import_commonvoice,
        a.cv_dir,
        langs,
        a.out,
        voices=a.voices,
        validated_extra=a.validated_extra,
        keep_original=a.keep_original,
        executor=a.executor,
        workers=a.workers,
        overwrite=a.overwrite,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
