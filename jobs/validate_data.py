"""Validate a corpus: schema of every file, then every row decoded in parallel (Ray Data).

A row group whose pages cannot be read is listed once (unreadable_row_group: the file, the group and its rows, all
counted as bad) and the other row groups are checked as usual (docs/data.md#unreadable-row-groups).
Exit status: 0 all rows valid, 1 bad rows found (each listed with id, reason and file), 3 layout/schema error,
a --vocab that is missing or not a vocabulary, or a --report that cannot be written (a missing or read-only
directory): all found before Ray starts, one line naming the file (the data exit status of every job,
docs/architecture.md).

--num-cpus is not a worker count: it sizes the local Ray the job starts (the config jobs' ray.local_num_cpus).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from unispeech_platform.data.schema import scan_corpus
from unispeech_platform.data.summary import print_table
from unispeech_platform.data.validate import (
    EXECUTORS,
    ValidationReport,
    load_vocab,
    report_lines,
    validate_corpus,
)
from unispeech_platform.runtime.cli import positive_int
from unispeech_platform.runtime.errors import EXIT_SETUP, JobSetupError
from unispeech_platform.runtime.job_flags import alias, flags_parser, start_flags_job
from unispeech_platform.runtime.output_parent import check_output_parent

EXAMPLES = (
    "--input data/synth",
    "--input data/cv --vocab data/cv/vocab.json --report bad_rows.json",
    "--input data/small --executor local --no-progress",
)


def parser() -> argparse.ArgumentParser:
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("--input", metavar="ROOT", default=None,
                   help="corpus root (lang=<code>/split=<name>/*.parquet)" + alias("a positional ROOT"))
    p.add_argument("root", nargs="?", default=None, help=argparse.SUPPRESS)  # the old spelling: ROOT alone
    p.add_argument(
        "--vocab", default=None, help="vocab.json to check phones against (default: <input>/vocab.json)"
    )
    p.add_argument("--report", default=None, help="also write the bad rows and statistics to this JSON file")
    p.add_argument(
        "--num-cpus", type=positive_int, default=None,
        help="logical CPUs of a local Ray (default max(8, 4x cores), as every job; ignored with RAY_ADDRESS)",
    )
    p.add_argument(
        "--executor", choices=EXECUTORS, default="ray",
        help="where rows are decoded: ray (tasks on RAY_ADDRESS's cluster or a local Ray) or local (this process, "
             "no Ray: small corpora)",
    )
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value): the root given once."""
    p = parser()
    a = p.parse_args(argv)
    if a.input is not None and a.root is not None and a.input != a.root:
        p.error(f"two corpus roots: --input {a.input} and {a.root}; give one")
    a.input = a.input if a.input is not None else a.root
    if a.input is None:
        p.error("the following arguments are required: --input")
    return a


def main(argv: list[str] | None = None) -> int:
    a = start_flags_job(parser(), parse(argv))
    from unispeech_platform.config import RaySection
    from unispeech_platform.runtime.ray_session import connect_ray

    try:
        if a.report:
            check_output_parent(a.report, "--report")  # written at the end: its directory is checked now
        scan_corpus(a.input)  # layout and every footer's schema before Ray starts
        load_vocab(a.input, a.vocab)  # and the vocabulary
        if a.executor == "ray":  # RAY_ADDRESS (e.g. `ray job submit`) or a local Ray
            connect_ray(RaySection(local_num_cpus=a.num_cpus))
        report = validate_corpus(a.input, a.vocab, executor=a.executor)
    except JobSetupError as e:  # CorpusError included: one line naming the file
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_SETUP
    print_table(report.stats.table(f"valid rows in {report.root}"))
    for line in report_lines(report):
        print(line)
    if a.report:
        try:
            write_report(a.report, report)
        except OSError as e:  # checked before the run, but a disk may fill or a directory vanish meanwhile
            print(f"ERROR: --report {a.report}: cannot write ({e.strerror or e})", file=sys.stderr)
            return EXIT_SETUP
    return 0 if report.ok else 1


def write_report(path: str, report: ValidationReport) -> None:
    """The bad rows and statistics as JSON (``--report``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"stats": report.stats.to_dict(), "bad": [asdict(b) for b in report.bad],
                   "reasons": dict(report.reasons())}, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    raise SystemExit(main())
