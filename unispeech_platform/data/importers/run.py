"""One import from start to end, for every source: check the input and the destination, choose where rows are
converted, stream the converted rows into the corpus writer in input order, and write the report of the rows
that were not imported and the summary (docs/data.md#import-your-data)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from unispeech_platform.runtime.failures import Failure
from unispeech_platform.runtime.output_parent import check_output_parent
from unispeech_platform.runtime.output_paths import OutputDir

from ..summary import atomic_write_text, print_table, write_summary
from ..writer import CorpusWriter, prepare_output
from .common import DUPLICATE_ID, REPORT_FILE, UNKNOWN_WORDS_LISTED, ImportInputError, Options, Record
from .destination import check_destination, local_corpus_dir
from .executors import convert_with, prepare_executor, resolve_executor
from .g2p import check_voice_lib, voice_for

REPORT_COLUMNS = {name: name for name in ("where", "id", "lang", "split", "reason", "detail")}
"""The report's header -> the Failure field in that column (a source may keep the layout its users know)."""


def run_import(
    fmt: str,
    records: Iterable[Record],
    out: str | Path,
    *,
    args: dict[str, Any],
    opts: Options,
    langs_for_voices: Iterable[str] = (),
    workers: int | None = None,
    executor: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    source_info: dict[str, Any] | None = None,
    report_columns: dict[str, str] = REPORT_COLUMNS,
) -> tuple[dict[str, Any], list[Failure]]:
    """Import ``records`` into a corpus at ``out`` (a local path, or a URI: built in a local staging directory,
    then uploaded to an empty prefix); returns the summary and the failed rows (each printed and listed in
    ``<out>/import_report.tsv``). ``executor``: "processes" (a local pool of ``workers``), "ray" (tasks on the
    connected or a local Ray) or "auto" (ray when RAY_ADDRESS names a cluster). Input errors (ImportInputError,
    FileNotFoundError) come before any work; re-running with the same ``args`` into a complete corpus is a no-op,
    other arguments need ``overwrite``."""
    check_output_parent(out, "--out", makes_parents=True, is_file=False)  # a place it can write, before any work
    stream = iter(records)
    first = next(stream, None)  # the readers raise their input errors lazily: before Ray, staging or a writer
    pending = itertools.chain([] if first is None else [first], stream)
    remote = check_destination(str(out), overwrite)
    inputs = [str(v) for k in ("input", "source") if (v := args.get(k))]
    with local_corpus_dir(str(out), remote) as local:
        output, existing = prepare_output(local, args, overwrite=overwrite, inputs=inputs)  # before Ray starts
        if existing is not None:
            print(f"corpus {out} is complete for these arguments: reusing it")
            return existing, [Failure.from_dict(f) for f in existing.get("failures", [])]
        check_voices(langs_for_voices, opts)
        executor = resolve_executor(executor)
        prepare_executor(executor)
        return write_corpus(fmt, pending, output, args=args, opts=opts, workers=workers, executor=executor,
                            progress=progress, source_info=source_info, report_columns=report_columns)


def check_voices(langs: Iterable[str], opts: Options) -> None:
    """Every language's espeak-ng voice exists (``--targets phones`` only): one line naming the language if not."""
    if opts.targets != "phones":
        return
    for lang in langs:
        try:
            check_voice_lib(voice_for(lang, opts.voices))
        except ValueError as e:
            raise ImportInputError(f"--lang {lang}: {e} (pass --voice LANG=VOICE)") from None


def write_corpus(
    fmt: str,
    records: Iterable[Record],
    output: OutputDir,
    *,
    args: dict[str, Any],
    opts: Options,
    workers: int | None,
    executor: str,
    progress: bool,
    source_info: dict[str, Any] | None,
    report_columns: dict[str, str],
) -> tuple[dict[str, Any], list[Failure]]:
    """Stream the converted ``records`` into the corpus directory ``output`` (prepared: writer.prepare_output),
    then its report and summary (``source_info`` goes into summary.json)."""
    out = output.root
    failures: list[Failure] = []
    seen: set[str] = set()  # ids must be unique corpus-wide (validate_data checks it): a repeat is listed
    unknown: dict[str, Counter[tuple[str, str]]] = {}
    fields = tuple(report_columns.values())
    with CorpusWriter(output) as writer:
        stream = convert_with(executor, records, opts, workers)
        for rec, row, failure, words in tqdm(stream, desc=f"importing ({fmt})", unit="row", disable=not progress):
            if words:
                unknown.setdefault(rec.lang or "", Counter()).update(words)
            if failure is None and rec.id in seen:
                failure = Failure(where=rec.where, id=rec.id, lang=rec.lang or "", split=rec.split,
                                  reason=DUPLICATE_ID,
                                  detail="an earlier row has this id (pass --id-column to pick another column)")
            if failure is not None:
                failures.append(failure)
                print(f"FAILED {failure.line(fields)}")
            else:
                seen.add(rec.id)
                writer.write(rec.lang, rec.split, row)
        if not writer.stats.partitions:
            source = args.get("input") or args.get("source")
            raise ImportInputError(f"{source}: no row could be imported ({sum(f.rows for f in failures)} failed)")
    header = "\t".join(report_columns) + "\n"
    atomic_write_text(out / REPORT_FILE, header + "".join(f.line(fields) + "\n" for f in failures))
    unknown_words = {
        lang: [{"word": w, "why": why, "rows": n} for (w, why), n in counts.most_common(UNKNOWN_WORDS_LISTED)]
        for lang, counts in sorted(unknown.items())
    }
    reasons: Counter[str] = Counter()
    for f in failures:  # rows, not entries: an unreadable row group is one entry for all of its rows
        reasons[f.reason] += f.rows
    summary = write_summary(out, writer.stats, args=args, source=source_info or {}, failed=dict(reasons),
                            failures=[asdict(f) for f in failures], unknown_words=unknown_words)
    print_table(writer.stats.table(f"{fmt} import {out}"))
    print_unknown_words(unknown_words)
    if failures:
        print(f"{sum(reasons.values())} rows not imported ({dict(reasons)}); see {out / REPORT_FILE}")
    return summary, failures


def print_unknown_words(unknown_words: dict[str, list[dict[str, Any]]]) -> None:
    """Per language, the ten words the G2P knew least often (the rest are in summary.json)."""
    for lang, words in unknown_words.items():
        listed = ", ".join(f"{w['word']!r} x{w['rows']} ({w['why']})" for w in words[:10])
        more = f" and {len(words) - 10} more in summary.json" if len(words) > 10 else ""
        print(f"words unknown to the G2P ({lang}): {listed}{more}")
