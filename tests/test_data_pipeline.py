"""The Ray Data pipeline and the validator on a corpus of bad, odd and good rows (real Parquet, real Ray)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import build_messy_corpus, encode, good_rows, peak_hz, write_part
from train_helpers import local_ray

from jobs import validate_data
from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.batching import STAT_KEYS, make_buckets
from unispeech_platform.data.decode import DROP_REASONS, LONGER_THAN_MAX, SHORTER_THAN_MIN, language_rates
from unispeech_platform.data.pipeline import (
    ShardingHint,
    build_dataset,
    epoch_rows,
    iter_batches,
    iter_local_batches,
)
from unispeech_platform.data.schema import SCHEMA, CorpusError, partition_dir, scan_corpus, select_parts
from unispeech_platform.data.validate import validate_corpus

ODD = ["odd-wav-8k-stereo", "odd-flac-44k", "odd-ogg-48k-stereo", "odd-mp3-22k"]


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict[str, str], set[str]]:
    root = tmp_path_factory.mktemp("messy")
    reasons, valid = build_messy_corpus(root)
    return root, reasons, valid


def _cfg(root: Path, **kw) -> DataConfig:
    base = {
        "path": str(root),
        "max_batch_seconds": 4.0,
        "max_duration_s": 4.0,
        "max_batch_size": 4,
        "shuffle_buffer_rows": 8,
        "decode_batch_rows": 4,
    }
    return DataConfig(**{**base, **kw})


def _epoch(stream) -> tuple[list[dict], list[str]]:
    batches = list(stream)
    return batches, [i for b in batches for i in b["id"]]


def test_validate_names_every_bad_row(ray_local, messy):
    root, reasons, valid = messy
    report = validate_corpus(root)
    assert {b.id: b.reason for b in report.bad} == reasons
    assert all(b.where.endswith(".parquet") and b.detail for b in report.bad)
    stats = report.stats.partitions
    assert stats[("es", "train")].utterances + stats[("ru", "train")].utterances == len(valid)
    assert stats[("es", "train")].labeled == stats[("es", "train")].utterances - 1  # odd-unlabeled is valid
    assert stats[("es", "dev")].utterances == 4


def test_validate_cli_exit_status_and_report(ray_local, messy, tmp_path, capsys):
    root, reasons, _ = messy
    assert validate_data.main([str(root), "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    for rid, reason in reasons.items():
        assert f"BAD {rid}\t{reason}" in out
    assert "phones [ru] (4): a b c d" in out
    clean = tmp_path / "clean"
    write_part(clean, "es", "train", good_rows("es", 3))
    assert validate_data.main([str(clean), "--vocab", str(root / "vocab.json")]) == 0


def test_pipeline_drops_and_counts_bad_rows(ray_local, messy):
    root, reasons, valid = messy
    cfg = _cfg(root)
    stream = iter_batches(build_dataset(cfg, "train"), cfg, epoch=0, train=True)
    _, ids = _epoch(stream)
    assert sorted(ids) == sorted(valid)  # every valid row once, no bad row
    assert stream.dropped == {r: Counter(reasons.values())[r] for r in DROP_REASONS}
    assert list(stream.stats) == list(STAT_KEYS)
    assert stream.stats["rows_read"] == len(valid) + len(reasons)
    assert stream.stats["rows"] == len(valid)


def test_local_path_matches_ray_path(ray_local, messy):
    root, _, _ = messy
    cfg = _cfg(root)
    ray_batches, ray_ids = _epoch(iter_batches(build_dataset(cfg, "train"), cfg, epoch=0, train=False))
    local = iter_local_batches(cfg, "train")
    local_batches, local_ids = _epoch(local)
    assert ray_ids == local_ids
    for a, b in zip(ray_batches, local_batches, strict=True):
        assert (a["input_values"] == b["input_values"]).all()
    assert local.dropped["num_samples_mismatch"] == 1 and local.dropped["truncated"] == 2  # a cut WAV: truncated


def test_odd_audio_decodes_to_16k_mono_440hz(messy):
    root, _, _ = messy
    found = {}
    for batch in iter_local_batches(_cfg(root, langs=["es"]), "train"):
        for i, rid in enumerate(batch["id"]):
            n = int(batch["attention_mask"][i].sum())
            found[rid] = (batch["input_values"][i, :n].numpy(), batch["labeled"][i].item())
    for rid in ODD:
        wave, labeled = found[rid]
        assert abs(len(wave) - 16000) <= 2, rid  # 1 s at 16 kHz whatever the source rate
        assert abs(peak_hz(wave) - 440.0) <= 2.0, rid
        assert labeled
    assert found["odd-unlabeled"][1] is False


def test_batches_respect_budget_and_labels(ray_local, messy):
    root, _, _ = messy
    cfg = _cfg(root, max_batch_seconds=2.6, max_duration_s=2.6, max_batch_size=3)
    stream = iter_batches(build_dataset(cfg, "train"), cfg, epoch=0, train=True)
    batches, _ = _epoch(stream)
    for b in batches:
        B, T = b["input_values"].shape
        assert B <= 3 and B * T <= 2.6 * 16000
        assert b["attention_mask"].shape == (B, T) and b["labels"].shape[0] == B
        for i in range(B):
            assert (b["labels"][i] >= 0).any() == b["labeled"][i]  # unlabeled rows: all -100
    assert stream.dropped[LONGER_THAN_MAX] == 1  # the 2.75 s ru row
    assert stream.stats["batches"] == len(batches)


def test_same_seed_same_batches(ray_local, messy):
    root, _, _ = messy
    cfg = _cfg(root, crop_seconds=0.7, crop_labeled=True)
    ds = build_dataset(cfg, "train")

    def run(c, epoch):
        batches, _ = _epoch(iter_batches(ds, c, epoch=epoch, train=True))
        return [(b["id"], b["input_values"]) for b in batches]

    first, again = run(cfg, 0), run(cfg, 0)
    assert [ids for ids, _ in first] == [ids for ids, _ in again]
    assert all((a == b).all() for (_, a), (_, b) in zip(first, again, strict=True))
    assert [ids for ids, _ in run(cfg, 1)] != [ids for ids, _ in first]  # a new epoch reshuffles
    assert max(v.shape[1] for _, v in first) == int(0.7 * 16000)  # crops applied


def test_ray_partition_and_labeled_filters(ray_local, messy):
    root, _, _ = messy
    cfg = _cfg(root, labeled_only=True, langs=["es"])
    _, ray_ids = _epoch(iter_batches(build_dataset(cfg, "train"), cfg, epoch=0, train=False))
    _, local_ids = _epoch(iter_local_batches(cfg, "train"))
    assert ray_ids == local_ids and "odd-unlabeled" not in ray_ids
    assert ray_ids and all(not i.startswith(("ru-", "es-dev-")) for i in ray_ids)


def test_labeled_only_lang_filter_and_duration(messy):
    root, _, valid = messy
    _, ids = _epoch(iter_local_batches(_cfg(root, labeled_only=True, langs=["es"]), "train"))
    assert "odd-unlabeled" not in ids and not any(i.startswith("ru-") for i in ids)
    short = iter_local_batches(_cfg(root, min_duration_s=1.6), "train")
    _, ids = _epoch(short)
    assert short.dropped[SHORTER_THAN_MIN] > 0 and all(i.startswith("ru-") or "good" in i for i in ids)


def test_language_balanced_sampling(messy):
    root, _, _ = messy
    parts = select_parts(scan_corpus(root), None, ["train"])
    uniform = language_rates(parts, 0.0, labeled_only=False)
    assert uniform["ru"] > 1.0 > uniform["es"]  # es has more (declared) hours: thinned; ru repeated
    half = language_rates(parts, 0.5, labeled_only=False)
    assert uniform["ru"] > half["ru"] > 1.0
    assert language_rates(parts, 1.0, labeled_only=False)["ru"] == pytest.approx(1.0)  # natural distribution

    def seconds_per_lang(cfg, epochs):
        secs = Counter()
        for epoch in range(epochs):
            for b in iter_local_batches(cfg, "train", epoch=epoch, train=True):
                for lang, n in zip(b["lang"], b["attention_mask"].sum(1).tolist(), strict=True):
                    secs[lang] += n / 16000
        return secs

    natural = seconds_per_lang(_cfg(root), 1)
    balanced = seconds_per_lang(_cfg(root, lang_sampling_alpha=0.0), 8)
    for lang in ("es", "ru"):  # delivered hours follow the rates (rows repeated or skipped per epoch)
        assert balanced[lang] / 8 == pytest.approx(uniform[lang] * natural[lang], rel=0.2)


def test_make_buckets_budget():
    lengths = [5, 1, 9, 3, 3, 8, 2]
    buckets = make_buckets(lengths, max_samples=12, max_size=3)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 12 for b in buckets)


def test_missing_column_and_stray_file_are_named(ray_local, tmp_path):
    root = tmp_path / "c"
    path = write_part(root, "es", "train", good_rows("es", 2))
    pq.write_table(pq.read_table(path).drop_columns(["sample_rate"]), path)  # num_samples may be missing, not it
    with pytest.raises(CorpusError, match=r"part-00000\.parquet: missing column 'sample_rate'"):
        scan_corpus(root)
    with pytest.raises(CorpusError, match="missing column 'sample_rate'"):
        build_dataset(_cfg(root), "train")
    assert validate_data.main([str(root)]) == 3

    root2 = tmp_path / "d"
    write_part(root2, "es", "train", good_rows("es", 2))
    (root2 / "lang=es" / "split=train" / "notes.txt").write_text("hello")
    with pytest.raises(CorpusError, match=r"notes\.txt: not a Parquet file"):
        scan_corpus(root2)
    fake = root2 / "lang=es" / "split=dev" / "part-00000.parquet"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not parquet at all")
    (root2 / "lang=es" / "split=train" / "notes.txt").unlink()
    with pytest.raises(CorpusError, match=r"split=dev/part-00000\.parquet: not a readable Parquet file"):
        scan_corpus(root2)


def test_config_rejects_unknown_and_inconsistent_fields(tmp_path):
    with pytest.raises(ValueError, match="extra"):
        DataConfig(path="x", bogus=1)
    with pytest.raises(ValueError, match="max_batch_seconds"):
        DataConfig(path="x", max_duration_s=30, max_batch_seconds=10)
    assert all(f.description for f in DataConfig.model_fields.values())


def test_silence_row_normalises_without_nan(tmp_path):
    root = tmp_path / "s"
    silent = good_rows("es", 1)[0]
    silent.update(id="silent", audio=encode(np.zeros(16000, np.float32), 16000, "FLAC"))
    write_part(root, "es", "train", [silent])
    PhoneTokenizer.from_phones(["a b c d"]).save(root)
    (batch,) = list(iter_local_batches(_cfg(root), "train"))
    assert np.isfinite(batch["input_values"].numpy()).all()


def test_sharding_blocks_give_every_shard_rows_whenever_rows_cover_the_shards():
    # streaming_split hands each block to the shard with the fewest rows: every shard gets one if there are at
    # least as many non-empty blocks as shards, i.e. if blocks hold at most rows // shards rows
    for rows in range(1, 300):
        for shards in range(1, 17):
            k = ShardingHint(rows, max_block_rows=32).block_rows(shards)
            assert 1 <= k <= 32
            if rows >= shards:
                assert -(-rows // k) >= shards, (rows, shards, k)
    assert ShardingHint(8, 4).block_rows(2) == 1  # small corpus: ~4 blocks per shard
    assert ShardingHint(100_000, 32).block_rows(64) == 32  # large corpus: one decode call's rows


def test_epoch_rows_count_labeled_rows_from_the_footer_or_the_column(tmp_path):
    rows = good_rows("es", 6)
    for r in rows[::3]:
        r["phones"] = None  # 2 unlabeled rows
    write_part(tmp_path, "es", "train", rows)
    no_stats = partition_dir(tmp_path, "es", "train") / "part-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), no_stats, write_statistics=False)
    parts = select_parts(scan_corpus(tmp_path), None, ["train"])
    assert epoch_rows(parts, labeled_only=False) == 12
    assert epoch_rows(parts, labeled_only=True) == 8


def test_a_pool_of_few_pieces_of_unlike_parts_is_warned_about_before_ray(tmp_path):
    """Training reads shuffled pieces and mixes rows inside a worker's pool: a pool that holds only a few pieces
    of parts that differ (languages, labeled vs unlabeled) trains in blocks, so the job says so, naming the keys,
    the numbers and, when the part's row groups are the cause, the file."""
    from unispeech_platform.data.batch_order import blocked_order_warning

    write_part(tmp_path, "es", "train", good_rows("es", 6))
    unlabeled = good_rows("pt", 6)
    for r in unlabeled:
        r["phones"] = None
    write_part(tmp_path, "pt", "train", unlabeled)
    parts = select_parts(scan_corpus(tmp_path), None, ["train"])

    msg = blocked_order_warning(parts, DataConfig(path=str(tmp_path), shuffle_buffer_rows=5), workers=2)
    assert msg is not None and msg.startswith("data.shuffle_buffer_rows=5 holds fewer than 8 of the 6-row pieces")
    assert "(data.read_piece_rows=64)" in msg and "(12 rows / 2 workers)" in msg
    assert "(es, pt) with labeled and unlabeled parts" in msg
    assert "set data.shuffle_buffer_rows to at least 48 (or above 6)" in msg
    # the whole shard fits the pool: mixed
    assert blocked_order_warning(parts, DataConfig(path=str(tmp_path), shuffle_buffer_rows=6), workers=2) is None
    # labeled rows only: 6 es rows, one language, nothing to block
    es_only = DataConfig(path=str(tmp_path), shuffle_buffer_rows=2, labeled_only=True)
    assert blocked_order_warning(parts, es_only, workers=1) is None
    # one language, a labeled and an unlabeled part: blocks of labeled rows only, then unlabeled only
    write_part(tmp_path / "one", "es", "train", good_rows("es", 6))
    write_part(tmp_path / "one", "es", "train", unlabeled, index=1)
    one = select_parts(scan_corpus(tmp_path / "one"), None, ["train"])
    msg = blocked_order_warning(one, DataConfig(path=str(tmp_path / "one"), shuffle_buffer_rows=4), workers=1)
    assert msg is not None and "of labeled or unlabeled rows only;" in msg and "one language" not in msg
    # one language, all labeled: the order of its parts does not matter
    write_part(tmp_path / "same", "es", "train", good_rows("es", 6))
    write_part(tmp_path / "same", "es", "train", good_rows("es", 6), index=1)
    same = select_parts(scan_corpus(tmp_path / "same"), None, ["train"])
    assert blocked_order_warning(same, DataConfig(path=str(tmp_path / "same"), shuffle_buffer_rows=4), workers=1) is None


def test_small_pieces_mix_in_the_pool_and_a_large_row_group_is_named(tmp_path):
    """48-row parts in 8-row groups: 8-row pieces mix in a 64-row pool (8 pieces) though a worker's epoch
    (96 rows) exceeds it; 48-row pieces do not, and a part written as one 48-row group is the file to name."""
    from unispeech_platform.data.batch_order import blocked_order_warning

    write_part(tmp_path, "es", "train", good_rows("es", 48, seconds=0.25))  # row groups of 8
    write_part(tmp_path, "de", "train", good_rows("de", 48, seconds=0.25))
    parts = select_parts(scan_corpus(tmp_path), None, ["train"])
    small = DataConfig(path=str(tmp_path), shuffle_buffer_rows=64, read_piece_rows=8)
    assert blocked_order_warning(parts, small, workers=1) is None
    msg = blocked_order_warning(parts, small.model_copy(update={"read_piece_rows": 48}), workers=1)
    assert msg is not None and "of the 48-row pieces" in msg and "(data.read_piece_rows=48)" in msg
    big = partition_dir(tmp_path / "big", "de", "train")
    big.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(good_rows("de", 48, seconds=0.25), schema=SCHEMA), big / "part-00000.parquet",
                   row_group_size=48)
    write_part(tmp_path / "big", "es", "train", good_rows("es", 48, seconds=0.25))
    parts = select_parts(scan_corpus(tmp_path / "big"), None, ["train"])
    msg = blocked_order_warning(parts, small.model_copy(update={"path": str(tmp_path / "big")}), workers=1)
    assert msg is not None and f"{big / 'part-00000.parquet'} has row groups of 48 rows" in msg


def test_piece_order_spreads_every_part_over_the_epoch_and_repeats_per_seed():
    """Training's piece order: each piece once, the same for the same (seed, epoch), new every epoch, and each
    part spread evenly (a plain permutation of 36 pieces once left the last 10 without a labeled one)."""
    from unispeech_platform.data.pieces import piece_order

    groups = [0] * 6 + [1] * 6 + [2] * 6 + [3] * 18  # three small parts and a large one
    assert piece_order(groups, None, 5) == list(range(36))  # evaluation: part order
    assert piece_order(groups, 1, 2) == piece_order(groups, 1, 2)
    assert piece_order(groups, 1, 2) != piece_order(groups, 1, 3) != piece_order(groups, 2, 3)
    for seed in range(20):
        for epoch in range(3):
            order = piece_order(groups, seed, epoch)
            assert sorted(order) == list(range(36))
            parts = [groups[i] for i in order]
            for start in range(0, 36 - 12 + 1):  # any third of the epoch holds a piece of every part
                assert set(parts[start:start + 12]) == {0, 1, 2, 3}, (seed, epoch, parts)
    firsts = {tuple(i for i in piece_order(groups, s, 0) if groups[i] == 0) for s in range(5)}
    assert len(firsts) > 1  # a part's own pieces are shuffled too


def _decoded_block(labeled: list[bool], lengths: list[int]):
    import pyarrow as pa

    from unispeech_platform.data.decode import DECODED_SCHEMA

    n = len(labeled)
    cols = {"id": [f"u{i:03d}" for i in range(n)], "lang": ["es"] * n,
            "wave": [np.zeros(k, "<f4").tobytes() for k in lengths], "num_samples": lengths,
            "labels": [[1, 2, 3] if flag else None for flag in labeled], "rate": [1.0] * n}
    return pa.table({k: cols.get(k, [None] * n) for k in DECODED_SCHEMA.names}, schema=DECODED_SCHEMA)


@pytest.mark.parametrize("corpus_share", [0.2, 0.43, 0.8])
def test_labeled_share_holds_within_one_row_per_batch_whatever_the_corpus_holds(corpus_share):
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.batching import BatchStream

    rng = np.random.default_rng(1)
    n = 200
    labeled = list(rng.random(n) < corpus_share)
    lengths = [int(v) for v in rng.integers(16000, 48000, n)]
    cfg = DataConfig(path="unused", labeled_share=0.5, max_batch_seconds=12.0, max_duration_s=4.0,
                     shuffle_buffer_rows=80)
    batches = list(BatchStream([_decoded_block(labeled, lengths)], cfg, epoch=0, train=True))
    assert len(batches) > 5
    for b in batches:
        rows, hits = len(b["id"]), int(b["labeled"].sum())
        assert abs(hits - 0.5 * rows) <= 1, (rows, hits)
        assert b["input_values"].shape[0] * b["input_values"].shape[1] <= 12.0 * 16000  # the budget still holds
    ids = {i for b in batches for i in b["id"]}
    assert ids == {f"u{i:03d}" for i in range(n)}  # every row used; the scarce kind's rows repeat
    plain = DataConfig(path="unused", max_batch_seconds=12.0, max_duration_s=4.0, shuffle_buffer_rows=80)
    mixed = [int(b["labeled"].sum()) / len(b["id"]) for b in BatchStream([_decoded_block(labeled, lengths)], plain,
                                                                          epoch=0, train=True)]
    assert max(abs(m - 0.5) for m in mixed) > 0.15  # without it the share follows the corpus


def test_a_pool_of_one_kind_borrows_the_last_pool_of_the_other():
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.batching import BatchStream

    labeled = [True, False] * 20 + [True] * 40  # the second pool holds no unlabeled row
    cfg = DataConfig(path="unused", labeled_share=0.25, max_batch_seconds=8.0, max_duration_s=4.0,
                     shuffle_buffer_rows=40)
    batches = list(BatchStream([_decoded_block(labeled, [16000] * 80)], cfg, epoch=0, train=True))
    for b in batches:
        assert abs(int(b["labeled"].sum()) - 0.25 * len(b["id"])) <= 1
    evaluated = list(BatchStream([_decoded_block(labeled, [16000] * 80)], cfg, epoch=0, train=False))
    assert sum(len(b["id"]) for b in evaluated) == 80  # evaluation reads every row once, as it comes
