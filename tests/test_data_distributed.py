"""Two Ray Train workers share one epoch: every valid utterance exactly once, batches within budget."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from data_helpers import build_messy_corpus, local_ray

from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.decode import DROP_REASONS
from unispeech_platform.data.pipeline import build_dataset, exactly_once_data_config


@pytest.mark.slow
def test_two_workers_see_every_valid_row_once(tmp_path):
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

    with local_ray():
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
