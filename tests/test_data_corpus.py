"""Synthetic corpus (espeak-ng + wordfreq), IPA cleaning and the crash-safe streaming writer."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_helpers import good_rows

from jobs import make_corpus as make_corpus_job
from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data.espeak import ASCII_LEAK, LANGUAGE_SWITCH, NO_PHONES, G2PError, clean_ipa
from unispeech_platform.data.pipeline import iter_local_batches
from unispeech_platform.data.schema import SCHEMA, scan_corpus
from unispeech_platform.data.summary import read_summary
from unispeech_platform.data.synthetic import make_corpus, make_speakers
from unispeech_platform.data.writer import CorpusWriter

LANGS = ["en-us", "es", "fr", "ru"]
ARGS = {
    "speakers": 4,
    "unlabeled_fraction": 0.25,
    "seed": 3,
    "min_words": 2,
    "max_words": 4,
    "progress": False,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_corpus(out, LANGS, 12, workers=1, **ARGS)
    return out


def _rows(root: Path) -> list[dict]:
    rows = []
    for part in scan_corpus(root):
        for r in pq.read_table(part.path).to_pylist():
            rows.append({**r, "lang": part.lang, "split": part.split})
    return rows


def test_corpus_layout_schema_and_summary(corpus):
    parts = scan_corpus(corpus)
    assert {(p.lang, p.split) for p in parts} == {
        (lang, s) for lang in LANGS for s in ("train", "dev", "test")
    }
    assert all(pq.read_schema(p.path).equals(SCHEMA) for p in parts)
    rows = _rows(corpus)
    assert len(rows) == 12 * len(LANGS) and len({r["id"] for r in rows}) == len(rows)
    assert all(r["sample_rate"] == 16000 and r["audio"][:4] == b"fLaC" for r in rows)
    summary = read_summary(corpus)
    assert summary["total"]["utterances"] == len(rows) and summary["args"]["langs"] == LANGS
    assert summary["languages"]["es"]["train"]["utterances"] == sum(
        r["lang"] == "es" and r["split"] == "train" for r in rows
    )


def test_held_out_speakers_never_in_train(corpus):
    rows = _rows(corpus)
    for lang in LANGS:
        by_split = {
            s: {r["speaker"] for r in rows if r["lang"] == lang and r["split"] == s}
            for s in ("train", "dev", "test")
        }
        assert by_split["test"] and by_split["dev"] and by_split["train"]
        assert not by_split["test"] & by_split["train"] and not by_split["dev"] & by_split["train"]
        assert not by_split["test"] & by_split["dev"]


def test_phones_in_vocab_and_clean(corpus):
    vocab = PhoneTokenizer.from_file(corpus)
    rows = _rows(corpus)
    labeled = [r for r in rows if r["phones"] is not None]
    assert labeled and all(not vocab.unknown_phones(r["phones"]) for r in labeled)
    for r in labeled:
        assert "(" not in r["phones"] and "ˈ" not in r["phones"] and "ˌ" not in r["phones"]
        assert all(t.strip("_-") == t and t for t in r["phones"].split())
    # Only train rows may be unlabeled; dev/test keep references for PER.
    assert any(r["phones"] is None for r in rows) and all(r["phones"] for r in rows if r["split"] != "train")
    # Every row decodes in the pipeline (none dropped), and its length matches num_samples.
    stream = iter_local_batches(DataConfig(path=str(corpus)), ["train", "dev", "test"])
    assert sum(len(b["id"]) for b in stream) == len(rows) and not any(stream.dropped.values())


def test_same_seed_same_corpus_and_rerun_is_noop(corpus, tmp_path, capsys):
    # Each language is drawn from (seed, language) alone, so a corpus of a subset reproduces those rows.
    again = tmp_path / "again"
    make_corpus(again, ["es", "ru"], 12, workers=1, **ARGS)
    key = lambda r: r["id"]  # noqa: E731
    expected = sorted((r for r in _rows(corpus) if r["lang"] in ("es", "ru")), key=key)
    assert sorted(_rows(again), key=key) == expected
    mtimes = {p.path: p.path.stat().st_mtime_ns for p in scan_corpus(again)}
    make_corpus(again, ["es", "ru"], 12, workers=1, **ARGS)
    assert "reusing it" in capsys.readouterr().out
    assert {p.path: p.path.stat().st_mtime_ns for p in scan_corpus(again)} == mtimes
    with pytest.raises(FileExistsError, match="other arguments"):
        make_corpus(again, ["es", "ru"], 13, workers=1, **ARGS)
    other_seed = tmp_path / "other"
    make_corpus(other_seed, ["es"], 4, workers=1, **{**ARGS, "seed": 4})
    assert {r["text"] for r in _rows(other_seed)}.isdisjoint({r["text"] for r in expected})


def test_cli_short_clips_and_speaker_plan(tmp_path):
    out = tmp_path / "cli"
    argv = [
        "--out",
        str(out),
        "--langs",
        "es",
        "--per-lang",
        "6",
        "--speakers",
        "3",
        "--min-words",
        "1",
        "--max-words",
        "2",
        "--seed",
        "1",
        "--workers",
        "1",
    ]
    assert make_corpus_job.main(argv) == 0
    rows = _rows(out)
    assert len(rows) == 6 and all(len(r["text"].split()) <= 2 for r in rows)
    assert max(r["num_samples"] for r in rows) < 3 * 16000
    spk = make_speakers("es", 5, dev=1, test=2, seed=0)
    assert [s.split for s in spk] == ["test", "test", "dev", "train", "train"]
    assert len({s.voice for s in spk}) == 5 and spk == make_speakers("es", 5, dev=1, test=2, seed=0)
    with pytest.raises(ValueError, match="train speaker"):
        make_speakers("es", 2, dev=1, test=1, seed=0)
    with pytest.raises(ValueError, match="wordfreq has no word list"):
        make_corpus(tmp_path / "ky", ["ky"], 4, workers=1, progress=False)


@pytest.mark.parametrize(
    ("raw", "phones"),
    [
        ("ˈe_ʎ_o w_ˈo_ɾ_l_d", "e ʎ o w o ɾ l d"),  # stress marks stripped, words flattened
        ("l_a- m_ɛ_z_ˈɔ̃\n", "l a m ɛ z ɔ̃"),  # French link, clause newline
        ("w_ˈɔ__r_l_d l_ˈa_", "w ɔ r l d l a"),  # empty tokens dropped
        ("dZ_ɑ_q_S_ˈɯ", "dʒ ɑ q ʃ ɯ"),  # ASCII codes with an unambiguous IPA mapped
    ],
)
def test_clean_ipa(raw, phones):
    assert " ".join(clean_ipa(raw)) == phones


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ɛ_l_ˈo (en)_w_ˈɜː_l_d_(fr)", LANGUAGE_SWITCH),
        ("d[_y_j_n_ˈoe", ASCII_LEAK),
        ("h_ˈɛ_l_oː ??", ASCII_LEAK),
        ("ɪ^_k", ASCII_LEAK),
        ("ˈ _ -", NO_PHONES),
    ],
)
def test_clean_ipa_rejects(raw, reason):
    with pytest.raises(G2PError) as e:
        clean_ipa(raw)
    assert e.value.reason == reason


def test_writer_streams_row_groups_and_parts(tmp_path):
    rows = good_rows("es", 10)
    with CorpusWriter(tmp_path, row_group_bytes=20_000, part_bytes=60_000) as w:
        w.write_many("es", "train", rows)
    parts = scan_corpus(tmp_path)
    assert len(parts) > 1 and sum(p.num_rows for p in parts) == 10
    assert all(pq.ParquetFile(p.path).num_row_groups >= 1 for p in parts)
    assert max(pq.ParquetFile(p.path).metadata.row_group(0).num_rows for p in parts) < 10
    assert [r["id"] for p in parts for r in pq.read_table(p.path, columns=["id"]).to_pylist()] == [
        r["id"] for r in rows
    ]
    assert PhoneTokenizer.from_file(tmp_path).phones == ["a", "b", "c", "d"]


def test_writer_crash_leaves_no_visible_part(tmp_path):
    rows = good_rows("es", 6)
    with pytest.raises(RuntimeError), CorpusWriter(tmp_path, row_group_bytes=10_000, part_bytes=1 << 30) as w:
        w.write_many("es", "train", rows)  # row groups already flushed to the temp part
        assert list((tmp_path / "lang=es" / "split=train").glob(".part-*.tmp"))
        raise RuntimeError("crash mid-corpus")
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "vocab.json").exists()
