"""In what order does one training epoch deliver languages and labeled rows? The real pipeline on a local Ray.

Training reads the corpus in shuffled pieces (data/pieces.py) and mixes rows inside a worker's pool
(data.shuffle_buffer_rows); this prints, per window of batches, how many rows were labeled and which languages
occurred, for each reading order and pool side by side (``parts``: part after part, as evaluation reads and
training read before the piece reader; ``pieces``: training's shuffled pieces), so a blocked order shows at once
(docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool), e.g.

    .venv/bin/python bench/batch_order.py --corpus data/crosslingual-unlabeled/high \
        --vocab data/crosslingual-unlabeled/vocab.json --column parts:512 --column pieces:512 --column pieces:128 \
        --max-batch-size 8 --max-batch-seconds 40 --window 20

One consumer reads the whole epoch (a training worker reads its shard: 1 / num_workers of it, same order rules).
"""

from __future__ import annotations

import argparse

import ray

from unispeech_platform.config import PretrainJobConfig, load_config
from unispeech_platform.data.pipeline import build_dataset, iter_batches


def epoch_order(data, order: str, pool: int) -> list[tuple[int, int, set[str]]]:
    """(labeled rows, rows, languages) of each batch of epoch 0, in the order training would see them."""
    cfg = data.model_copy(update={"shuffle_buffer_rows": pool})
    ds = build_dataset(cfg, cfg.train_splits, shuffle=order == "pieces")
    stream = iter_batches(ds, cfg, epoch=0, train=True)
    return [(int(b["labeled"].sum()), len(b["lang"]), set(b["lang"])) for b in stream]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="corpus root")
    ap.add_argument("--vocab", default=None, help="phone vocabulary (default: <corpus>/vocab.json)")
    ap.add_argument("--config", default="configs/tiny.yaml", help="job config whose data section is used")
    ap.add_argument("--column", action="append", metavar="ORDER:POOL",
                    help="a reading order (parts or pieces) and data.shuffle_buffer_rows to compare (repeatable; "
                         "default pieces:512 and parts:512)")
    ap.add_argument("--window", type=int, default=10, help="batches per printed line")
    ap.add_argument("--max-batch-size", type=int, default=None, help="data.max_batch_size (default: the config's)")
    ap.add_argument("--max-batch-seconds", type=float, default=None, help="data.max_batch_seconds (default: the config's)")
    args = ap.parse_args()
    update = {"path": args.corpus, "vocab_path": args.vocab}
    for key in ("max_batch_size", "max_batch_seconds"):
        if getattr(args, key) is not None:
            update[key] = getattr(args, key)
    data = load_config(PretrainJobConfig, args.config).data.model_copy(update=update)
    columns = []
    for spec in args.column or ["pieces:512", "parts:512"]:
        order, _, pool = spec.partition(":")
        if order not in ("parts", "pieces") or not pool.isdigit():
            ap.error(f"--column {spec!r}: expected parts:<rows> or pieces:<rows>")
        columns.append((order, int(pool)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    orders = {col: epoch_order(data, *col) for col in columns}
    n = max(len(o) for o in orders.values())
    print(f"read_piece_rows {data.read_piece_rows}, seed {data.seed}")
    print("| batches | " + " | ".join(f"{o} / pool {p}: labeled / rows, languages" for o, p in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for i in range(0, n, args.window):
        cells = []
        for col in columns:
            w = orders[col][i:i + args.window]
            lab, rows = sum(b[0] for b in w), sum(b[1] for b in w)
            cells.append(f"{lab}/{rows}, {','.join(sorted(set().union(*(b[2] for b in w))))}" if w else "")
        print(f"| {i}-{i + args.window - 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
