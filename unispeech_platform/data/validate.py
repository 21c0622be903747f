"""Corpus validation: schema of every file, then every row decoded in parallel with Ray Data (or in this process).

A row is bad for exactly the reasons the training pipeline drops it for (``audio.decode_audio`` and
``decode.check_phones`` are shared), plus duplicate or null ids, plus the rows of a row group whose pages cannot be
read (``unreadable_row_group``: one report entry per group, naming the file, the group and its rows; the other
groups are checked as usual, data/row_groups.py). Odd but usable audio (stereo, 8 or 44.1 kHz, OGG, MP3, WAV) and
unlabeled rows are valid.

``check_corpus`` is the cheap, Ray-free part every job runs before it starts or joins Ray: layout, footers,
the requested splits, the vocabulary and the first data pages of a few parts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from unispeech_platform.config.data import DataConfig, join_path
from unispeech_platform.runtime.failures import Failure

from .audio import decode_audio
from .decode import check_phones, read_part, vocab_from
from .row_groups import UNREADABLE_ROW_GROUP, BadGroup, read_groups
from .schema import COLUMNS, READ_SCHEMA, VOCAB_FILE, CorpusError, PartFile, scan_corpus, select_parts
from .storage import locate
from .summary import CorpusStats

DUPLICATE_ID = "duplicate_id"
NULL_ID = "null_id"

CHECKED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("lang", pa.string()),
        ("split", pa.string()),
        ("speaker", pa.string()),
        ("phones", pa.string()),
        ("seconds", pa.float64()),
        ("error", pa.string()),
        ("detail", pa.string()),
        ("rows", pa.int64()),  # rows this entry stands for: 1, or all rows of an unreadable row group
    ]
)
CHECK_COLUMNS = ["id", "audio", "sample_rate", "num_samples", "speaker", "phones"]
"""What the validator reads of each row group (cast to READ_SCHEMA, as every reader casts)."""
GROUP_ROWS_SCHEMA = pa.schema([READ_SCHEMA.field(c) for c in CHECK_COLUMNS] + [
    ("lang", pa.string()), ("split", pa.string()), ("path", pa.string()),
    ("problem", pa.string()),  # an unreadable row group's description (one row stands for the group)
    ("rows", pa.int64()),
])
EXECUTORS = ("ray", "local")


@dataclass
class ValidationReport:
    """What :func:`validate_corpus` found: stats of the valid rows and every bad row with its reason (``where``:
    its Parquet part)."""

    root: str
    stats: CorpusStats
    bad: list[Failure] = field(default_factory=list)
    bad_by_partition: Counter = field(default_factory=Counter)
    vocab_checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.bad

    def reasons(self) -> Counter:
        """Bad rows by reason (an unreadable row group counts all of its rows)."""
        counts: Counter = Counter()
        for b in self.bad:
            counts[b.reason] += b.rows
        return counts


SAMPLE_PARTS = 4
"""Parts whose first data pages check_corpus decodes (first, last and evenly between)."""
SAMPLE_ROWS = 8


def sample_parts(parts: list[PartFile], n: int = SAMPLE_PARTS) -> list[PartFile]:
    """Up to ``n`` parts spread over the list (first and last included), in order."""
    if len(parts) <= n:
        return list(parts)
    return [parts[round(i * (len(parts) - 1) / (n - 1))] for i in range(n)] if n > 1 else parts[:1]


def check_data_pages(part: PartFile, rows: int = SAMPLE_ROWS) -> None:
    """Decode the first ``rows`` rows of every column of the first row group (a few data pages, cheap at any
    file size), cast as every reader casts them: a part whose footer reads but whose pages are garbage (or
    whose values do not fit, e.g. a sample rate beyond int32) raises CorpusError naming the file."""
    try:
        pf = part.open()
        if pf.metadata.num_row_groups:
            next(read_part(part).to_batches(batch_size=rows, columns=list(COLUMNS), fragment_readahead=0), None)
    except Exception as e:  # pyarrow raises OSError/ArrowInvalid/ArrowException subclasses for corrupt pages
        detail = " ".join(str(e).split())  # pyarrow's messages span lines; a job reports one
        raise CorpusError(f"{part.location}: data pages cannot be decoded ({type(e).__name__}: {detail})") from None


def check_corpus(cfg: DataConfig, splits: list[str], *, samples: int = SAMPLE_PARTS) -> list[PartFile]:
    """Everything about ``cfg.data`` a job can tell without Ray, so a wrong path or a garbage part stops it
    with one line naming the file (CorpusError, exit 3) instead of a traceback after Ray started: the corpus
    exists and follows the layout, every footer and schema reads, the requested splits (and languages) have
    parts, the vocabulary loads, and the first data pages of a few of the chosen parts decode. Returns the
    chosen parts."""
    everything = scan_corpus(cfg.path)
    try:
        parts = select_parts(everything, cfg.langs, splits)
    except CorpusError as e:
        raise CorpusError(f"{cfg.path}: {e}") from None
    try:
        vocab_from(cfg.resolved_vocab_path())
    except (OSError, ValueError) as e:
        raise CorpusError(f"{'data.vocab_path: ' if cfg.vocab_path else ''}{e}") from None
    for part in sample_parts(parts, samples):
        check_data_pages(part)
    return parts


def group_tables(part: PartFile, groups: list[int] | None = None) -> Iterator[pa.Table]:
    """A part's rows to check (``GROUP_ROWS_SCHEMA``), one table per row group; an unreadable group is one row
    with its ``problem`` and its row count, so its rows are failed and the part's other groups still checked."""
    fragment = next(iter(read_part(part).get_fragments()))

    def read(g: int) -> pa.Table:
        return fragment.subset(row_group_ids=[g]).to_table(schema=READ_SCHEMA, columns=CHECK_COLUMNS)

    for _, got in read_groups(fragment.metadata, str(part.location), read, groups):
        if isinstance(got, BadGroup):
            row = {**{name: None for name in CHECK_COLUMNS}, "id": got.label()}
            got_table = pa.Table.from_pylist([{**row, "problem": got.describe(), "rows": got.rows}],
                                             schema=pa.schema([GROUP_ROWS_SCHEMA.field(c) for c in
                                                               (*CHECK_COLUMNS, "problem", "rows")]))
        else:
            got_table = got.append_column("problem", pa.nulls(got.num_rows, pa.string())).append_column(
                "rows", pa.array([1] * got.num_rows, pa.int64()))
        n = got_table.num_rows
        for name, value in (("lang", part.lang), ("split", part.split), ("path", str(part.path))):
            got_table = got_table.append_column(name, pa.array([value] * n, pa.string()))
        yield got_table.select(GROUP_ROWS_SCHEMA.names)


def read_group_rows(items: pa.Table, parts: list[PartFile]) -> Iterator[pa.Table]:
    """Ray Data ``map_batches`` function over ``{"part", "group"}`` items: the rows of each row group to check."""
    for item in items.to_pylist():
        yield from group_tables(parts[item["part"]], [item["group"]])


def check_table(table: pa.Table, vocab: dict[str, int] | None) -> pa.Table:
    """Ray Data ``map_batches`` function: one checked row (no audio) per input row."""
    out: dict[str, list[Any]] = {name: [] for name in CHECKED_SCHEMA.names}
    for row in table.to_pylist():
        error, detail, seconds = None, "", 0.0
        if row["problem"] is not None:
            error, detail = UNREADABLE_ROW_GROUP, row["problem"]
        if error is None and row["id"] is None:
            error, detail = NULL_ID, "id is null"
        if error is None and vocab is not None:
            _, error, detail = check_phones(row["phones"], vocab)
        if error is None:
            d = decode_audio(row["audio"], row["sample_rate"], row["num_samples"])
            error, detail = d.error, d.detail
            if d.wave is not None:
                seconds = d.wave.shape[1] / d.sample_rate
        for name in ("id", "path", "lang", "split", "speaker", "phones", "rows"):
            out[name].append(row[name])
        out["seconds"].append(seconds)
        out["error"].append(error)
        out["detail"].append(detail)
    return pa.Table.from_pydict(out, schema=CHECKED_SCHEMA)


def _checked_on_ray(parts: list[PartFile], vocab: dict[str, int] | None, batch_rows: int) -> Iterator[pa.Table]:
    """Every row group read and checked in Ray Data tasks, one item per row group (groups read in parallel, each
    decoded in ``batch_rows`` batches). Local files are read on this node, as Ray's own Parquet reader does."""
    import ray
    import ray.data

    items = [{"part": i, "group": g} for i, part in enumerate(parts) for g in range(part.open().num_row_groups)]
    here = None  # local files: read on this node (the label selector Ray's own local reads use)
    if all(isinstance(p.fs, pafs.LocalFileSystem) for p in parts):
        here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    rows = ray.data.from_items(items).map_batches(read_group_rows, fn_kwargs={"parts": parts}, batch_size=1,
                                                  batch_format="pyarrow", label_selector=here)
    checked = rows.map_batches(check_table, fn_kwargs={"vocab": vocab}, batch_format="pyarrow",
                               batch_size=batch_rows)
    yield from checked.iter_batches(batch_size=None, batch_format="pyarrow")


def _checked_here(parts: list[PartFile], vocab: dict[str, int] | None, batch_rows: int) -> Iterator[pa.Table]:
    """The same checks in this process, part by part (no Ray: small corpora, a laptop, tests)."""
    for part in parts:
        for group in group_tables(part):
            for batch in group.to_batches(max_chunksize=batch_rows):
                yield check_table(pa.Table.from_batches([batch], schema=group.schema), vocab)


def load_vocab(root: str | Path, vocab_path: str | Path | None = None) -> dict[str, int] | None:
    """The vocabulary phones are checked against: ``vocab_path``, else ``<root>/vocab.json`` when there (None:
    phones are not checked). A missing or broken file raises CorpusError naming it, cheap enough for a job to
    call before Ray starts (``jobs.validate_data`` does)."""
    vocab_file = str(vocab_path) if vocab_path else join_path(str(root), VOCAB_FILE)
    if not vocab_path and not locate(vocab_file).is_file():
        return None
    try:
        return vocab_from(vocab_file)
    except (OSError, ValueError) as e:  # the message names the file
        raise CorpusError(str(e)) from None


def validate_corpus(
    root: str | Path, vocab_path: str | Path | None = None, *, decode_batch_rows: int = 16, executor: str = "ray"
) -> ValidationReport:
    """Check every file and row under ``root``. Layout/schema problems raise ``CorpusError`` naming the file
    and column; bad rows (and unreadable row groups) are collected in the report. ``executor`` "ray" uses the
    running Ray (or starts a local one); "local" checks in this process."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    parts = scan_corpus(root)
    loc = locate(root)
    vocab = load_vocab(root, vocab_path)
    run = _checked_on_ray if executor == "ray" else _checked_here
    report = ValidationReport(root=str(loc), stats=CorpusStats(), vocab_checked=vocab is not None)
    seen: set[str] = set()
    for block in run(parts, vocab, decode_batch_rows):
        for row in block.to_pylist():
            _add_row(report, row, seen)
    report.bad.sort(key=lambda b: (b.where, b.id))
    return report


def _add_row(report: ValidationReport, row: dict[str, Any], seen: set[str]) -> None:
    """One checked row into the report: a bad row (or unreadable group) with its reason, or the stats."""
    error, detail = row["error"], row["detail"]
    if error is None and row["id"] in seen:
        error, detail = DUPLICATE_ID, "id appears more than once in the corpus"
    if row["id"] is not None and error != UNREADABLE_ROW_GROUP:
        seen.add(row["id"])
    if error == UNREADABLE_ROW_GROUP:
        report.bad.append(Failure(where=row["path"], id=row["id"], lang=row["lang"],
                                  split=row["split"], reason=error, detail=detail, rows=row["rows"]))
        report.bad_by_partition[(row["lang"], row["split"])] += row["rows"]
    elif error is not None:
        report.bad.append(Failure(where=row["path"], id=row["id"] or "<null>", lang=row["lang"],
                                  split=row["split"], reason=error, detail=detail))
        report.bad_by_partition[(row["lang"], row["split"])] += 1
    else:
        report.stats.add_utterance(row["lang"], row["split"], seconds=row["seconds"], phones=row["phones"],
                                   speaker=row["speaker"])


def report_lines(report: ValidationReport) -> list[str]:
    """Human-readable bad-row list and phone inventories (the table comes from ``report.stats.table``)."""
    lines = []
    for lang in sorted({lang for lang, _ in report.stats.partitions}):
        inv: Counter = Counter()
        for (lg, _), p in report.stats.partitions.items():
            if lg == lang:
                inv.update(p.inventory)
        lines.append(f"phones [{lang}] ({len(inv)}): {' '.join(sorted(inv))}")
    if not report.vocab_checked:
        lines.append(f"WARNING: no {VOCAB_FILE} found: phones were not checked against a vocabulary")
    for (lang, split), n in sorted(report.bad_by_partition.items()):
        lines.append(f"bad rows in lang={lang}/split={split}: {n}")
    for b in report.bad:
        lines.append(f"BAD {b.id}\t{b.reason}\t{b.detail}\t{b.where}")
    if report.bad:
        reasons = report.reasons()
        summary = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()))
        lines.append(f"{sum(reasons.values())} bad rows ({summary})")
    else:
        total = sum(p.utterances for p in report.stats.partitions.values())
        lines.append(f"OK: all {total} rows valid")
    return lines
