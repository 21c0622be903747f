"""In what order does one training epoch deliver languages and labeled rows? The real pipeline on a local Ray.

Rows are mixed only inside a worker's pool (data.shuffle_buffer_rows); this prints, per window of batches, how many
rows were labeled and which languages occurred, for each pool size side by side, so a blocked order shows at once
(docs/data.md#batch-order-follows-the-corpus-parts-beyond-the-pool), e.g.

    .venv/bin/python bench/batch_order.py --corpus data/crosslingual-unlabeled/high \
        --vocab data/crosslingual-unlabeled/vocab.json --pool 512 --pool 4096 --max-batch-size 8 --max-batch-seconds 40

One consumer reads the whole epoch (a training worker reads its shard: 1 / num_workers of it, same order rules).
"""

from __future__ import annotations

import argparse

import ray

from unispeech_platform.config import PretrainJobConfig, load_config
from unispeech_platform.data.pipeline import build_dataset, iter_batches


def epoch_order(data, pool: int) -> list[tuple[int, int, set[str]]]:
    """(labeled rows, rows, languages) of each batch of epoch 0, in the order training would see them."""
    cfg = data.model_copy(update={"shuffle_buffer_rows": pool})
    stream = iter_batches(build_dataset(cfg, cfg.train_splits), cfg, epoch=0, train=True)
    return [(int(b["labeled"].sum()), len(b["lang"]), set(b["lang"])) for b in stream]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="corpus root")
    ap.add_argument("--vocab", default=None, help="phone vocabulary (default: <corpus>/vocab.json)")
    ap.add_argument("--config", default="configs/tiny.yaml", help="job config whose data section is used")
    ap.add_argument("--pool", type=int, action="append", help="data.shuffle_buffer_rows to compare (repeatable)")
    ap.add_argument("--window", type=int, default=10, help="batches per printed line")
    ap.add_argument("--max-batch-size", type=int, default=None, help="data.max_batch_size (default: the config's)")
    ap.add_argument("--max-batch-seconds", type=float, default=None, help="data.max_batch_seconds (default: the config's)")
    args = ap.parse_args()
    update = {"path": args.corpus, "vocab_path": args.vocab}
    for key in ("max_batch_size", "max_batch_seconds"):
        if getattr(args, key) is not None:
            update[key] = getattr(args, key)
    data = load_config(PretrainJobConfig, args.config).data.model_copy(update=update)
    pools = args.pool or [512, 4096]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    orders = {pool: epoch_order(data, pool) for pool in pools}
    n = max(len(o) for o in orders.values())
    print("| batches | " + " | ".join(f"pool {p}: labeled / rows, languages" for p in pools) + " |")
    print("|---|" + "---|" * len(pools))
    for i in range(0, n, args.window):
        cells = []
        for pool in pools:
            w = orders[pool][i:i + args.window]
            lab, rows = sum(b[0] for b in w), sum(b[1] for b in w)
            cells.append(f"{lab}/{rows}, {','.join(sorted(set().union(*(b[2] for b in w))))}" if w else "")
        print(f"| {i}-{i + args.window - 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
