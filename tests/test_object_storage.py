"""Object storage (docs/data.md#object-storage): a corpus on a real S3-compatible server (moto in server mode,
started here on a free port; pyarrow's own S3 client talks HTTP to it, nothing is mocked in-process) is scanned,
validated, trained on and evaluated from its s3:// URI. Its train split also holds a part written by pandas
(int64 sample_rate, no num_samples), so the lenient read is shown on the real training path too."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from data_helpers import PHONES, encode, tone
from train_helpers import ci_job, local_ray, make_tiny_corpus

pytest.importorskip("moto.server")

BUCKET = "corpora"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port; credentials from the usual env vars, the endpoint in the URI's query."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    try:
        yield f"endpoint_override=http://{host}:{port}&scheme=http"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def bucket(s3) -> pafs.FileSystem:
    """The test bucket, created once (users' buckets exist before any job writes to them)."""
    fs, _ = pafs.FileSystem.from_uri(f"s3://{BUCKET}?{s3}&allow_bucket_creation=true")
    fs.create_dir(BUCKET)
    return fs


@pytest.fixture(scope="module")
def corpus_uri(s3, bucket, tmp_path_factory) -> str:
    """The tiny corpus plus a pandas-written train part, uploaded to s3://corpora/tiny."""
    import pandas as pd

    local = make_tiny_corpus(tmp_path_factory.mktemp("s3src") / "tiny")
    pd.DataFrame({
        "id": ["pandas-0", "pandas-1"],
        "audio": [encode(tone(16000, 1.0 + 0.5 * i), 16000, "FLAC") for i in range(2)],
        "sample_rate": [16000, 16000],
        "speaker": ["p", "p"],
        "phones": [" ".join(PHONES.split()[:2])] * 2,
    }).to_parquet(local / "lang=es" / "split=train" / "part-pandas.parquet", index=False)
    pafs.copy_files(str(local), f"{BUCKET}/tiny", destination_filesystem=bucket)
    shutil.rmtree(local)  # nothing below may read the local copy
    return f"s3://{BUCKET}/tiny?{s3}"


def test_scan_and_check_read_the_bucket(corpus_uri, s3):
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.schema import CorpusError, scan_corpus
    from unispeech_platform.data.summary import read_summary
    from unispeech_platform.data.validate import check_corpus

    parts = scan_corpus(corpus_uri)
    assert {(p.lang, p.split) for p in parts} >= {("es", "train"), ("es", "dev")}
    assert all(str(p.path).startswith(f"{BUCKET}/tiny/lang=es/") for p in parts)
    assert check_corpus(DataConfig(path=corpus_uri), ["train"])
    assert read_summary(corpus_uri)["languages"]["es"]["train"]["utterances"] > 0
    with pytest.raises(CorpusError, match=rf"s3://{BUCKET}/nothing\?.*: corpus directory does not exist"):
        scan_corpus(f"s3://{BUCKET}/nothing?{s3}")


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


def test_validate_train_and_evaluate_from_s3(ray_local, corpus_uri, tmp_path, capsys):
    import jobs.evaluate
    from jobs import validate_data
    from unispeech_platform.train.driver import run_training

    assert validate_data.main([corpus_uri]) == 0
    assert "pandas-0" not in capsys.readouterr().out  # no BAD line: the pandas part is valid

    job = ci_job(Path("unused"), tmp_path, "s3", "train.max_steps=2", "train.num_workers=1", "train.zero_stage=0",
                 f"data.path={corpus_uri}")
    result = run_training(job)
    assert result.metrics["step"] == 2
    model_dir = Path(result.export_dir)
    assert (model_dir / "vocab.json").is_file()

    # PER evaluation needs a CTC model: a random one over the exported vocabulary (tests/evaluate_helpers.py)
    from evaluate_helpers import tiny_ctc_model

    from unispeech_core.tokenizer import PhoneTokenizer

    ctc_dir = tiny_ctc_model(model_dir / "vocab.json", tmp_path / "ctc")
    evaluated = jobs.evaluate.main([
        "--config", str(Path(__file__).resolve().parents[1] / "configs" / "evaluate_tiny.yaml"),
        "--set", f"evaluate.model_path={ctc_dir}", "--set", f"data.path={corpus_uri}",
        "--set", "evaluate.splits=[dev]", "--set", f"evaluate.output_dir={tmp_path / 'eval'}",
        "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "--set", "evaluate.batch_rows=8",
    ])
    assert len(PhoneTokenizer.from_file(model_dir)) > 3
    from unispeech_platform.data.summary import read_summary

    dev = read_summary(corpus_uri)["languages"]["es"]["dev"]["labeled"]
    assert f"| dev | es | {dev} |" in evaluated.table  # every labeled dev row was read from the bucket and scored
    assert evaluated.metrics["per/es"] > 0
    assert (tmp_path / "eval").is_dir()


def test_an_unreachable_endpoint_or_unknown_scheme_is_one_line(s3):
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.schema import CorpusError
    from unispeech_platform.data.validate import check_corpus

    with pytest.raises(CorpusError, match=r"cannot list the corpus \(.*Could not connect"):
        check_corpus(DataConfig(path=f"s3://{BUCKET}/tiny?endpoint_override=http://127.0.0.1:9&scheme=http"), ["train"])
    with pytest.raises(CorpusError, match=r"nosuch://x/y: cannot list the corpus \(Unrecognized filesystem"):
        check_corpus(DataConfig(path="nosuch://x/y"), ["train"])


def test_import_writes_a_corpus_to_an_empty_prefix_only(s3, bucket, tmp_path, capsys):
    """jobs.import_dataset --out s3://...: built locally, uploaded (vocab.json and summary.json last), readable from
    the URI; a second import into the same prefix is refused and changes nothing."""
    from jobs import import_dataset
    from unispeech_platform.data.schema import scan_corpus
    from unispeech_platform.data.storage import locate
    from unispeech_platform.data.summary import read_summary

    (tmp_path / "clips").mkdir()
    for i in range(3):
        (tmp_path / "clips" / f"c{i}.wav").write_bytes(encode(tone(22050, 1.0), 22050, "WAV"))
    manifest = tmp_path / "train.tsv"
    manifest.write_text("path\tsentence\n" + "".join(f"clips/c{i}.wav\thola {i}\n" for i in range(3)))
    uri = f"s3://{BUCKET}/imported?{s3}"
    argv = ["--format", "manifest", "--input", str(manifest), "--out", uri, "--lang", "es", "--split", "train",
            "--targets", "chars", "--workers", "1", "--no-progress"]

    assert import_dataset.main(argv) == 0
    assert "uploaded" in capsys.readouterr().out
    assert [(p.lang, p.split) for p in scan_corpus(uri)] == [("es", "train")]
    assert read_summary(uri)["languages"]["es"]["train"]["utterances"] == 3
    before = sorted((i.path, i.size) for i in locate(uri).walk())
    assert any(path.endswith("/vocab.json") for path, _ in before)

    with pytest.raises(SystemExit) as refused:
        import_dataset.main([*argv, "--overwrite"])
    assert refused.value.code == 3
    assert "already holds files" in capsys.readouterr().err
    assert sorted((i.path, i.size) for i in locate(uri).walk()) == before
    assert not list(Path(tempfile.gettempdir()).glob("unispeech-import-*"))  # staging removed
