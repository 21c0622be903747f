"""Will a training epoch arrive in blocks? Training reads a corpus in pieces of ``data.read_piece_rows`` rows
(consecutive row groups) in a shuffled order and mixes rows inside a worker's pool of ``data.shuffle_buffer_rows``
(data/pieces.py, data/batching.py). A pool that holds only a few pieces cannot mix them: with parts written in
large row groups (a piece is never less than a row group), a corpus whose parts differ (languages, or labeled
vs unlabeled parts) is then trained one language, or only unlabeled rows, for as long as a piece lasts. That
silently broke a UniSpeech run when the reader still went part by part
(docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool).

Told from Parquet footers before Ray starts; a warning, not an error: a large corpus cannot always be pooled.
"""

from __future__ import annotations

from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.pieces import plan_pieces
from unispeech_platform.data.pipeline import epoch_rows, labeled_rows, part_rows
from unispeech_platform.data.schema import PartFile

DOC = "docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool"
PIECES_PER_POOL = 8
"""A pool that holds fewer pieces than this is warned about: its batches come from a handful of parts."""


def blocked_order_warning(parts: list[PartFile], cfg: DataConfig, workers: int) -> str | None:
    """One line naming the keys and the numbers when a worker's epoch exceeds its pool, the pool holds fewer
    than PIECES_PER_POOL of the largest pieces, and the parts differ in language or in being labeled; None
    otherwise (every worker pools its whole shard, the pieces are small, or the parts are alike)."""
    rows = epoch_rows(parts, labeled_only=cfg.labeled_only)
    per_worker = -(-rows // max(workers, 1))
    pool = cfg.shuffle_buffer_rows
    if per_worker <= pool:
        return None
    counts = [(p, labeled_rows(p), part_rows(p)) for p in parts]
    read = [(p, labeled, total) for p, labeled, total in counts if (labeled if cfg.labeled_only else total) > 0]
    langs = sorted({p.lang for p, _, _ in read})
    kinds = set()
    if not cfg.labeled_only:  # a part is labeled, unlabeled, or mixed inside (then its rows are already mixed)
        kinds = {"labeled" if labeled == total else "unlabeled" if labeled == 0 else "mixed" for _, labeled, total in read}
    mixed = len(kinds) > 1
    if len(langs) < 2 and not mixed:
        return None
    largest = max(plan_pieces([p for p, _, _ in read], cfg.read_piece_rows), key=lambda piece: piece.rows)
    if largest.rows * PIECES_PER_POOL <= pool:
        return None
    blocks = " and ".join(
        w for w, on in (("one language", len(langs) > 1), ("labeled or unlabeled rows only", mixed)) if on
    )
    cause = (f"data.read_piece_rows={cfg.read_piece_rows}" if largest.rows <= cfg.read_piece_rows else
             f"{largest.part.path} has row groups of {largest.rows} rows (a piece is never less than a row group; "
             "jobs.import_dataset and jobs.make_corpus write 64-row groups)")
    return (f"data.shuffle_buffer_rows={pool} holds fewer than {PIECES_PER_POOL} of the {largest.rows}-row pieces "
            f"that training reads in shuffled order ({cause}), and a worker reads {per_worker} rows per epoch "
            f"({rows} rows / {workers} workers) from parts of {len(langs)} language(s) ({', '.join(langs)})"
            f"{' with labeled and unlabeled parts' if mixed else ''}: batches will come in blocks of {blocks}; "
            f"set data.shuffle_buffer_rows to at least {largest.rows * PIECES_PER_POOL} (or above {per_worker}) "
            f"if memory allows, or write the parts with smaller row groups ({DOC})")
