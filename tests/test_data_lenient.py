"""Lenient reading (docs/data.md#what-a-part-may-look-like): Parquet written by pandas, polars or plain pyarrow
(int64 sample_rate, large/view/dictionary strings and binaries, integer speakers, no num_samples) is read the
same as our own writer's parts, by the scan, the local reader, Ray Data and validate_data; a column that cannot
be used stops every reader with one line naming the file and the column."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import PHONES, encode, good_rows, tone, write_part
from train_helpers import local_ray

from jobs import validate_data
from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.decode import LONGER_THAN_MAX, language_rates
from unispeech_platform.data.pipeline import build_dataset, iter_batches, iter_local_batches
from unispeech_platform.data.schema import CorpusError, partition_dir, scan_corpus, select_parts
from unispeech_platform.data.validate import check_corpus
from unispeech_platform.runtime.errors import JobSetupError

SECONDS = {"pd-0": 1.0, "pd-1": 1.5, "pd-2": 2.0, "pd-3": 5.0}  # pd-3 is beyond max_duration_s


def pandas_rows(prefix: str = "") -> pd.DataFrame:
    """What a user's pandas script writes: int64 sample_rate and speaker, no num_samples, object strings."""
    return pd.DataFrame({
        "id": [prefix + i for i in SECONDS],
        "audio": [encode(tone(16000, s, freq=300 + 50 * i), 16000, "FLAC") for i, s in enumerate(SECONDS.values())],
        "sample_rate": [16000] * len(SECONDS),
        "speaker": [7, 7, 8, 8],
        "phones": [PHONES, None, PHONES, PHONES],
    })


def polars_like_table() -> pa.Table:
    """What polars and pyarrow users write: view/large/dictionary types, unsigned integers."""
    rows = good_rows("pl", 2)
    return pa.table({
        "id": pa.array([r["id"] for r in rows], pa.string_view()),
        "audio": pa.array([r["audio"] for r in rows], pa.large_binary()),
        "sample_rate": pa.array([16000, 16000], pa.uint16()),
        "num_samples": pa.array([r["num_samples"] for r in rows], pa.uint32()),
        "speaker": pa.array(["a", "b"]).dictionary_encode(),
        "text": pa.array([None, "hola"], pa.large_string()),
        "phones": pa.array([PHONES, PHONES], pa.large_string()),
    })


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """es/train: one part of ours, one written by pandas, one polars-like; es/dev: a pandas part."""
    root = tmp_path_factory.mktemp("lenient")
    write_part(root, "es", "train", good_rows("es", 3))
    pandas_part = partition_dir(root, "es", "train") / "part-00001.parquet"
    pandas_rows().to_parquet(pandas_part, index=False)
    pq.write_table(polars_like_table(), partition_dir(root, "es", "train") / "part-00002.parquet")
    partition_dir(root, "es", "dev").mkdir(parents=True)
    pandas_rows("dev-").to_parquet(partition_dir(root, "es", "dev") / "part-00000.parquet", index=False)
    PhoneTokenizer.from_phones([PHONES]).save(root)
    return root


def _cfg(root: Path, **kw) -> DataConfig:
    base = {"path": str(root), "max_batch_seconds": 4.0, "max_duration_s": 4.0, "max_batch_size": 4,
            "decode_batch_rows": 4}
    return DataConfig(**{**base, **kw})


def test_the_pandas_part_is_what_users_get(corpus):
    schema = pq.read_schema(partition_dir(corpus, "es", "train") / "part-00001.parquet")
    assert schema.field("sample_rate").type == pa.int64() and schema.field("speaker").type == pa.int64()
    assert "num_samples" not in schema.names


def test_scan_and_corpus_check_accept_other_writers(corpus):
    parts = scan_corpus(corpus)
    assert [p.num_rows for p in parts] == [4, 3, 4, 2]  # dev, then train parts in file order
    assert len(check_corpus(_cfg(corpus), ["train", "dev"])) == 4


def test_local_reader_casts_and_takes_lengths_from_the_audio_header(corpus):
    stream = iter_local_batches(_cfg(corpus), "dev")
    ids = sorted(i for b in stream for i in b["id"])
    assert ids == ["dev-pd-0", "dev-pd-1", "dev-pd-2"]  # pd-3 (5 s, no num_samples) is filtered by its header's length
    assert stream.dropped[LONGER_THAN_MAX] == 1
    # hours per language from the headers equal those from declared lengths
    dev = select_parts(scan_corpus(corpus), None, ["dev"])
    assert language_rates(dev, 0.5, labeled_only=False) == {"es": pytest.approx(1.0)}


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


def test_ray_data_reads_every_writer_into_training_batches(ray_local, corpus):
    cfg = _cfg(corpus, labeled_only=True)
    stream = iter_batches(build_dataset(cfg, "train"), cfg, epoch=0, train=True)
    batches = list(stream)
    ids = sorted(i for b in batches for i in b["id"])
    assert ids == ["es-good-000", "es-good-001", "es-good-002", "pd-0", "pd-2", "pl-good-000", "pl-good-001"]  # pd-1 unlabeled, pd-3 long
    assert all(b["labels"].shape[1] == 4 and (b["labels"] >= 0).all() for b in batches)
    assert stream.dropped[LONGER_THAN_MAX] == 1


def test_validate_data_accepts_the_pandas_corpus(ray_local, corpus, capsys):
    assert validate_data.main([str(corpus)]) == 0
    assert "OK: all 13 rows valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("column", "values", "says"),
    [
        ("audio", [[0.1, 0.2]], "column 'audio' has type list<element: double>; expected binary"),
        ("phones", [3], "column 'phones' has type int64; expected a string of phone tokens"),
        ("sample_rate", ["16k"], "column 'sample_rate' has type large_string; expected an integer sample rate"),
    ],
)
def test_a_column_of_the_wrong_kind_is_named(tmp_path, capsys, column, values, says):
    good = pandas_rows().head(1)
    path = partition_dir(tmp_path, "es", "train") / "part-00000.parquet"
    path.parent.mkdir(parents=True)
    good.assign(**{column: values}).to_parquet(path, index=False)
    PhoneTokenizer.from_phones([PHONES]).save(tmp_path)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: {says}")) as e:
        check_corpus(_cfg(tmp_path), ["train"])
    assert isinstance(e.value, JobSetupError) and "\n" not in str(e.value)  # a job's exit 3, one line
    assert validate_data.main([str(tmp_path)]) == 3  # a data error, before Ray
    assert f"{path}: {says}" in capsys.readouterr().err


def test_a_missing_required_column_is_named(tmp_path):
    path = partition_dir(tmp_path, "es", "train") / "part-00000.parquet"
    path.parent.mkdir(parents=True)
    pandas_rows().drop(columns=["sample_rate"]).to_parquet(path, index=False)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: missing column 'sample_rate' (required: id, audio")):
        scan_corpus(tmp_path)


def test_a_file_uri_reads_like_the_path(corpus):
    uri = f"file://{corpus}"
    assert [(p.path, p.num_rows) for p in scan_corpus(uri)] == [(p.path, p.num_rows) for p in scan_corpus(corpus)]
    assert sorted(i for b in iter_local_batches(_cfg(uri), "dev") for i in b["id"]) == ["dev-pd-0", "dev-pd-1",
                                                                                     "dev-pd-2"]
