"""Common Voice import on a tiny release-shaped fixture with real MP3 clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_helpers import encode, tone

from jobs import import_commonvoice as import_job
from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.audio import TOO_FEW_SAMPLES, UNDECODABLE
from unispeech_platform.data.espeak import LANGUAGE_SWITCH
from unispeech_platform.data.importers.common import REPORT_FILE
from unispeech_platform.data.importers.commonvoice import EMPTY_SENTENCE, MISSING_CLIP, import_commonvoice
from unispeech_platform.data.pipeline import iter_local_batches
from unispeech_platform.data.schema import scan_corpus

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
# lang -> split file -> [(client_id, clip, sentence, audio kind)]; audio kind: good | short | garbage | none
RELEASE = {
    "es": {
        "train.tsv": [
            ("spk-a", "es_1.mp3", '"¿Qué?" dijo él', "good"),
            ("spk-a", "es_2.mp3", "buenos días a todos", "good"),
            ("spk-b", "es_3.mp3", "hola", "none"),
            ("spk-b", "es_4.mp3", "casa grande", "garbage"),
            ("spk-b", "es_5.mp3", "   ", "good"),
        ],
        "dev.tsv": [("spk-dev", "es_6.mp3", "la mesa es roja", "good")],
        "test.tsv": [("spk-test", "es_7.mp3", "el perro come", "good")],
        "validated.tsv": [
            ("spk-a", "es_1.mp3", '"¿Qué?" dijo él', "good"),
            ("spk-new", "es_8.mp3", "un libro nuevo", "good"),
            ("spk-test", "es_9.mp3", "otra frase", "good"),
        ],
    },
    "fr": {
        "train.tsv": [
            ("spk-c", "fr_1.mp3", "bonjour le monde", "good"),
            ("spk-c", "fr_2.mp3", "le computer est là", "good"),
            ("spk-c", "fr_3.mp3", "oui", "short"),
        ],
        "dev.tsv": [("spk-d", "fr_4.mp3", "merci beaucoup", "good")],
        "test.tsv": [("spk-e", "fr_5.mp3", "au revoir", "good")],
    },
}
EXPECTED_FAILURES = {
    "es_3.mp3": MISSING_CLIP,
    "es_4.mp3": UNDECODABLE,
    "es_5.mp3": EMPTY_SENTENCE,
    "fr_2.mp3": LANGUAGE_SWITCH,
    "fr_3.mp3": TOO_FEW_SAMPLES,
}


def build_release(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for lang, files in RELEASE.items():
        clips = root / lang / "clips"
        clips.mkdir(parents=True)
        for name, rows in files.items():
            (root / lang / name).write_text(
                HEADER + "".join(f"{c}\t{p}\t{s}\t2\t0\t\t\t\t{lang}\t\n" for c, p, s, _ in rows),
                encoding="utf-8",
            )
            for _, clip, _, kind in rows:
                if kind == "good":  # Common Voice ships 48 kHz mono MP3
                    (clips / clip).write_bytes(
                        encode(tone(48000, 1.2, freq=200 + rng.integers(0, 300)), 48000, "MP3")
                    )
                elif kind == "short":
                    (clips / clip).write_bytes(encode(tone(48000, 0.005), 48000, "MP3"))
                elif kind == "garbage":
                    (clips / clip).write_bytes(rng.bytes(2000))
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    release = build_release(tmp / "release")
    out = tmp / "corpus"
    summary, failures = import_commonvoice(
        release, ["es", "fr"], out, validated_extra=True, workers=1, progress=False
    )
    return release, out, summary, failures


def _rows(root: Path) -> dict[str, dict]:
    return {
        r["id"]: {**r, "lang": p.lang, "split": p.split}
        for p in scan_corpus(root)
        for r in pq.read_table(p.path).to_pylist()
    }


def test_failures_reported_with_reasons(imported, capsys):
    _, out, summary, failures = imported
    assert {f.where: f.reason for f in failures} == EXPECTED_FAILURES
    report = (out / REPORT_FILE).read_text(encoding="utf-8").splitlines()
    assert report[0].startswith("lang\tsplit\tpath\treason")
    assert {line.split("\t")[2]: line.split("\t")[3] for line in report[1:]} == EXPECTED_FAILURES
    assert summary["failed"] == {
        r: list(EXPECTED_FAILURES.values()).count(r) for r in set(EXPECTED_FAILURES.values())
    }


def test_rows_splits_speakers_and_phones(imported):
    _, out, _, _ = imported
    rows = _rows(out)
    assert {(r["lang"], r["split"], r["id"]) for r in rows.values()} == {
        ("es", "train", "cv-es-es_1"),
        ("es", "train", "cv-es-es_2"),
        ("es", "train", "cv-es-es_8"),  # from validated.tsv; es_9 belongs to a test speaker
        ("es", "dev", "cv-es-es_6"),
        ("es", "test", "cv-es-es_7"),
        ("fr", "train", "cv-fr-fr_1"),
        ("fr", "dev", "cv-fr-fr_4"),
        ("fr", "test", "cv-fr-fr_5"),
    }
    vocab = PhoneTokenizer.from_file(out)
    for r in rows.values():
        assert r["audio"][:4] == b"fLaC" and r["sample_rate"] == 16000
        assert abs(r["num_samples"] - int(1.2 * 16000)) < 2000  # MP3 encoder padding
        assert r["phones"] and not vocab.unknown_phones(r["phones"])
    assert rows["cv-es-es_1"]["text"] == '"¿Qué?" dijo él' and rows["cv-es-es_1"]["speaker"] == "spk-a"
    assert rows["cv-fr-fr_1"]["phones"] == "b ɔ̃ ʒ u ʁ l ə m ɔ̃ d"
    batches = list(iter_local_batches(DataConfig(path=str(out)), ["train", "dev", "test"]))
    assert sum(len(b["id"]) for b in batches) == len(rows)


def test_cli_keep_original_mp3_and_exit_status(imported, tmp_path, capsys):
    release, _, _, _ = imported
    out = tmp_path / "mp3"
    assert (
        import_job.main(["--cv-dir", str(release), "--langs", "es", "--out", str(out), "--keep-original"])
        == 1
    )
    printed = capsys.readouterr().out
    assert "FAILED es\ttrain\tes_3.mp3\tmissing_clip" in printed
    rows = _rows(out)
    assert len(rows) == 4 and all(r["sample_rate"] == 48000 for r in rows.values())
    stream = iter_local_batches(DataConfig(path=str(out)), ["train", "dev", "test"])
    assert sum(len(b["id"]) for b in stream) == 4 and not any(stream.dropped.values())
    with pytest.raises(ValueError, match="missing column 'sentence'"):
        bad = tmp_path / "bad"
        (bad / "es" / "clips").mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            (bad / "es" / name).write_text("client_id\tpath\n", encoding="utf-8")
        import_commonvoice(bad, ["es"], tmp_path / "bad_out", workers=1, progress=False)
