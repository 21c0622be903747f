"""Two Ray Train workers share each epoch: every valid utterance exactly once, batches within budget, and no
worker's shard is ever empty, even when the corpus is one small Parquet part (one Ray block by default)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from data_helpers import PHONES, build_messy_corpus, good_rows, write_part
from train_helpers import local_ray

from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.decode import DROP_REASONS
from unispeech_platform.data.pipeline import build_dataset, exactly_once_data_config


@pytest.fixture(scope="module")
def ray_session():
    with local_ray():
        yield


@pytest.mark.slow
def test_two_workers_see_every_valid_row_once(tmp_path, ray_session):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    corpus = tmp_path / "corpus"
    reasons, valid = build_messy_corpus(corpus)
    out = tmp_path / "seen"
    out.mkdir()
    cfg = DataConfig(
        path=str(corpus),
        max_batch_seconds=3.0,
        max_duration_s=3.0,
        max_batch_size=3,
        shuffle_buffer_rows=6,
        decode_batch_rows=2,
    )

    def loop(config):  # defined here so Ray pickles it by value (tests/ is not on the workers' path)
        import ray.train

        from unispeech_platform.data.pipeline import iter_batches

        data_cfg = DataConfig(**config["data"])
        rank = ray.train.get_context().get_world_rank()
        shard = ray.train.get_dataset_shard("train")
        for epoch in range(2):
            stream = iter_batches(shard, data_cfg, epoch=epoch, train=True)
            batches = [{"ids": b["id"], "shape": list(b["input_values"].shape)} for b in stream]
            record = {"batches": batches, "stats": stream.stats}
            Path(config["out"], f"rank{rank}-epoch{epoch}.json").write_text(json.dumps(record))
            ray.train.report({"epoch": epoch, "batches": len(batches)})

    trainer = TorchTrainer(
        loop,
        train_loop_config={"data": cfg.model_dump(), "out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(name="data-exactly-once", storage_path=str(tmp_path / "runs")),
        datasets={"train": build_dataset(cfg, "train")},
        dataset_config=exactly_once_data_config(),
    )
    trainer.fit()

    for epoch in range(2):
        records = [json.loads((out / f"rank{r}-epoch{epoch}.json").read_text()) for r in range(2)]
        ids = [i for rec in records for b in rec["batches"] for i in b["ids"]]
        assert sorted(ids) == sorted(valid)  # no loss, no duplicate across ranks
        assert all(rec["batches"] for rec in records)  # both ranks got work
        for rec in records:
            for b in rec["batches"]:
                rows, samples = b["shape"]
                assert rows <= 3 and rows * samples <= 3.0 * 16000
            assert rec["stats"]["batches"] == len(rec["batches"])  # batch counts are observable per rank
        dropped = Counter()
        for rec in records:
            dropped.update({r: rec["stats"][f"dropped/{r}"] for r in DROP_REASONS})
        assert dropped == Counter({r: n for r, n in Counter(reasons.values()).items()})


EPOCHS = 5


@pytest.mark.slow
def test_two_workers_train_five_epochs_on_eight_utterances_in_lockstep(tmp_path, ray_session):
    """8 utterances in one Parquet part decode into one Ray block (128 MiB blocks by default): before the blocks
    were cut for the split, rank 1's shard was empty in every epoch and LockstepBatches raised."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    corpus = tmp_path / "corpus"
    rows = good_rows("es", 8)
    write_part(corpus, "es", "train", rows)
    PhoneTokenizer.from_phones([PHONES]).save(corpus)
    out = tmp_path / "seen"
    out.mkdir()
    cfg = DataConfig(path=str(corpus), max_batch_size=2, max_batch_seconds=10.0, max_duration_s=5.0)

    def loop(config):  # defined here so Ray pickles it by value (tests/ is not on the workers' path)
        import ray.train

        from unispeech_platform.data.pipeline import iter_batches
        from unispeech_platform.train.batches import LockstepBatches

        data_cfg = DataConfig(**config["data"])
        rank = ray.train.get_context().get_world_rank()
        shard = ray.train.get_dataset_shard("train")
        streams = {}

        def open_epoch(epoch):
            streams[epoch] = iter_batches(shard, data_cfg, epoch=epoch, train=True)
            return streams[epoch]

        feed = LockstepBatches(open_epoch)
        seen = []  # (epoch, ids) per micro-batch, as the trainer would consume them
        while True:
            batch = feed.next()
            if feed.epoch == config["epochs"]:
                break
            seen.append((feed.epoch, batch["id"]))
        delivered = {e: streams[e].stats["rows_read"] for e in range(config["epochs"])}
        # a restore re-opens epoch 2 and skips the micro-batch already consumed: the next one is the one seen
        restored = LockstepBatches(open_epoch, epoch=2, skip=1).next()["id"]
        record = {"seen": seen, "delivered": delivered, "restored": restored}
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(record))

    trainer = TorchTrainer(
        loop,
        train_loop_config={"data": cfg.model_dump(), "out": str(out), "epochs": EPOCHS},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(name="data-small-corpus", storage_path=str(tmp_path / "runs")),
        datasets={"train": build_dataset(cfg, "train")},
        dataset_config=exactly_once_data_config(),
    )
    trainer.fit()

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    ids = sorted(r["id"] for r in rows)
    for epoch in range(EPOCHS):
        per_rank = [[i for e, batch in rank["seen"] if e == epoch for i in batch] for rank in ranks]
        assert all(per_rank), (epoch, per_rank)  # every rank trained in every epoch
        assert sorted(per_rank[0] + per_rank[1]) == ids, (epoch, per_rank)  # each utterance exactly once
        assert sum(int(rank["delivered"][str(epoch)]) for rank in ranks) == len(ids)  # the split lost nothing
    # lockstep: both ranks consumed the same number of micro-batches in every epoch
    assert [e for e, _ in ranks[0]["seen"]] == [e for e, _ in ranks[1]["seen"]]
    for rank in ranks:
        assert rank["restored"] == [batch for e, batch in rank["seen"] if e == 2][1]  # same rows, same order


@pytest.mark.slow
def test_training_reads_pieces_of_every_part_in_a_new_order_each_epoch_and_a_resume_replays_its_epoch(
        tmp_path, ray_session):
    """Three 48-row parts (de, es, pt) in 8-row groups: each worker's rows of an epoch come in the pieces' order
    drawn for that epoch (the reader shuffles pieces, not parts, and reseeds every epoch), the first pieces mix
    languages, and a worker group that starts at epoch 1 (a resume) reads epoch 1's order, not epoch 0's."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from unispeech_platform.data.pieces import part_groups, piece_order, plan_pieces
    from unispeech_platform.data.schema import scan_corpus, select_parts

    corpus = tmp_path / "corpus"
    for lang in ("de", "es", "pt"):
        write_part(corpus, lang, "train", good_rows(lang, 48, seconds=0.25))
    PhoneTokenizer.from_phones([PHONES]).save(corpus)
    cfg = DataConfig(path=str(corpus), max_batch_size=4, max_batch_seconds=10.0, max_duration_s=5.0,
                     read_piece_rows=8, seed=3)
    pieces = plan_pieces(select_parts(scan_corpus(corpus), None, ["train"]), 8)
    assert len(pieces) == 18

    def loop(config):  # defined here so Ray pickles it by value; raw rows in delivery order, per epoch
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        shard = ray.train.get_dataset_shard("train")
        seen = [[i for b in shard.iter_batches(batch_size=None, batch_format="pyarrow") for i in b["id"].to_pylist()]
                for _ in range(config["epochs"])]
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(seen))

    def fit(name: str, epochs: int, start_epoch) -> list[list[list[str]]]:
        out = tmp_path / name
        out.mkdir()
        TorchTrainer(
            loop,
            train_loop_config={"out": str(out), "epochs": epochs},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
            run_config=RunConfig(name=name, storage_path=str(tmp_path / "runs")),
            datasets={"train": build_dataset(cfg, "train", shuffle=True)},
            dataset_config=exactly_once_data_config(start_epoch=start_epoch),
        ).fit()
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    def piece_of(row_id: str) -> tuple[str, int]:  # good_rows ids: <lang>-good-<index>; 8 rows per row group
        lang, _, index = row_id.split("-")
        return lang, int(index) // 8

    def follows(epoch: int, rows: list[str]) -> bool:
        """rows come piece after piece, in a subsequence of that epoch's drawn piece order"""
        order = iter([(pieces[k].part.lang, pieces[k].row_groups[0]) for k in piece_order(part_groups(pieces), 3, epoch)])
        runs = [p for j, p in enumerate(map(piece_of, rows)) if j == 0 or piece_of(rows[j - 1]) != p]
        return all(p in order for p in runs)

    ranks = fit("resumed", 2, lambda: 1)  # a worker group that resumes in epoch 1, then trains epoch 2
    every = sorted(r["id"] for lang in ("de", "es", "pt") for r in good_rows(lang, 48, seconds=0.25))
    for j, epoch in enumerate((1, 2)):
        assert sorted(ranks[0][j] + ranks[1][j]) == every  # each row exactly once
        for rank in ranks:
            assert follows(epoch, rank[j]) and not follows(0, rank[j]), (epoch, rank[j])
            assert len({i.split("-")[0] for i in rank[j][:24]}) >= 2  # no worker starts one language long
