"""Will a training epoch arrive in blocks? Rows are mixed only inside a worker's pool of
``data.shuffle_buffer_rows`` (data/batching.py); a shard larger than that arrives part by part, in the corpus's
partition order, so a corpus whose parts differ (languages, or labeled vs unlabeled parts) is then trained one
language, or only unlabeled rows, for as long as a part lasts. That silently broke a UniSpeech run whose last
quarter of every epoch had no labeled row (docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool).

Told from Parquet footers before Ray starts; a warning, not an error: a large corpus cannot always be pooled.
"""

from __future__ import annotations

from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.pipeline import epoch_rows, labeled_rows, part_rows
from unispeech_platform.data.schema import PartFile

DOC = "docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool"


def blocked_order_warning(parts: list[PartFile], cfg: DataConfig, workers: int) -> str | None:
    """One line naming the key and the numbers when a worker's epoch exceeds its pool and the parts differ in
    language or in being labeled; None when every worker pools its whole shard or the parts are alike."""
    rows = epoch_rows(parts, labeled_only=cfg.labeled_only)
    per_worker = -(-rows // max(workers, 1))
    if per_worker <= cfg.shuffle_buffer_rows:
        return None
    counts = [(p.lang, labeled_rows(p), part_rows(p)) for p in parts]
    read = [(lang, labeled, total) for lang, labeled, total in counts if (labeled if cfg.labeled_only else total) > 0]
    langs = sorted({lang for lang, _, _ in read})
    kinds = set()
    if not cfg.labeled_only:  # a part is labeled, unlabeled, or mixed inside (then its rows are already mixed)
        kinds = {"labeled" if labeled == total else "unlabeled" if labeled == 0 else "mixed" for _, labeled, total in read}
    mixed = len(kinds) > 1
    if len(langs) < 2 and not mixed:
        return None
    blocks = " and ".join(
        w for w, on in (("one language", len(langs) > 1), ("labeled or unlabeled rows only", mixed)) if on
    )
    return (f"data.shuffle_buffer_rows={cfg.shuffle_buffer_rows} is below a worker's {per_worker} training rows per "
            f"epoch ({rows} rows / {workers} workers) from parts of {len(langs)} language(s) ({', '.join(langs)})"
            f"{' with labeled and unlabeled parts' if mixed else ''}: batches will follow the parts' order in blocks "
            f"of {blocks}; set data.shuffle_buffer_rows above {per_worker} if memory allows ({DOC})")
