"""jobs.evaluate: per-language PER equals jiwer's own numbers, MLflow holds per/ metrics and the table; bad model
paths fail with a message naming them before any Ray work starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import pytest
import torch
from evaluate_helpers import CI_MODEL, ROOT, tiny_ctc_model, two_lang_corpus
from train_helpers import local_ray

CONFIG = ROOT / "configs" / "evaluate_tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return two_lang_corpus(tmp_path_factory)


def _expected_per(corpus: Path, model_dir: Path, split: str) -> dict[str, jiwer.WordOutput]:
    """Independent reference: decode utterance by utterance without Ray, score each language with jiwer."""
    from unispeech_core import PhoneTokenizer, UniSpeechForCTC, ctc_greedy_decode
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.pipeline import iter_local_batches

    model = UniSpeechForCTC.from_pretrained(model_dir)
    tok = PhoneTokenizer.from_file(model_dir)
    pairs: dict[str, tuple[list[str], list[str]]] = {}
    cfg = DataConfig(path=str(corpus), max_batch_size=1, labeled_only=True)
    with torch.inference_mode():
        for batch in iter_local_batches(cfg, split):
            out = model(batch["input_values"], batch["attention_mask"])
            refs, hyps = pairs.setdefault(batch["lang"][0], ([], []))
            refs.append(tok.decode([int(i) for i in batch["labels"][0] if i >= 0]))
            hyps.append(ctc_greedy_decode(out.logits, out.frame_lengths, tok)[0])
    return {lang: jiwer.process_words(r, h) for lang, (r, h) in pairs.items()}


@pytest.mark.slow
def test_per_per_language_matches_jiwer_and_lands_in_the_training_run(corpus, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    import jobs.evaluate

    job_dir = tmp_path / "job"  # the layout a training job leaves: model/ export + step_N/train_state.json
    model_dir = tiny_ctc_model(corpus / "vocab.json", job_dir / "model")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    train_run = client.create_run(client.create_experiment("unispeech-tiny"), run_name="finetune").info.run_id
    (job_dir / "step_00000003").mkdir()
    (job_dir / "step_00000003" / "train_state.json").write_text(json.dumps({"step": 3, "run_id": train_run}))

    with local_ray():  # a private Ray, never one left running here
        result = jobs.evaluate.main([
            "--config", str(CONFIG), "--set", f"evaluate.model_path={job_dir}", "--set", f"data.path={corpus}",
            "--set", "evaluate.splits=[dev, test]", "--set", f"evaluate.output_dir={tmp_path / 'eval'}",
            "--set", f"tracking.uri={uri}", "--set", "evaluate.batch_rows=8",
        ])

    evaluation = client.get_run(result.run_id)  # the evaluation's own run, nested under the training run
    assert result.run_id != train_run and evaluation.data.tags["mlflow.parentRunId"] == train_run
    assert evaluation.info.experiment_id == client.get_run(train_run).info.experiment_id
    for split in ("dev", "test"):
        expected = _expected_per(corpus, model_dir, split)
        assert set(expected) == {"es", "ru"}
        for lang, e in expected.items():
            n = e.hits + e.substitutions + e.deletions
            assert result.metrics[f"per/{lang}/{split}"] == pytest.approx(e.wer, abs=1e-12)
            assert result.metrics[f"sub/{lang}/{split}"] == pytest.approx(e.substitutions / n, abs=1e-12)
            assert result.metrics[f"del/{lang}/{split}"] == pytest.approx(e.deletions / n, abs=1e-12)
            assert result.metrics[f"ins/{lang}/{split}"] == pytest.approx(e.insertions / n, abs=1e-12)
            assert 0.3 < e.wer < 5.0  # a real mix of errors, not an all-blank output
        macro = sum(e.wer for e in expected.values()) / 2
        assert result.metrics[f"per/avg/{split}"] == pytest.approx(macro, abs=1e-12)
        assert f"per/weighted/{split}" in result.metrics

    run = evaluation
    assert run.data.metrics["per/es/test"] == pytest.approx(result.metrics["per/es/test"])
    assert "per/avg/dev" in run.data.metrics and "per/weighted/test" in run.data.metrics
    assert [m.step for m in client.get_metric_history(result.run_id, "per/avg/dev")] == [3]  # the model's update
    assert not any(k.startswith("per/") for k in client.get_run(train_run).data.metrics)
    assert run.info.status == "FINISHED" and run.data.tags["unispeech.model_step"] == "3"
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/per.md", "evaluation/per.csv", "evaluation/per.json", "evaluation/per.png"} <= artifacts
    table = Path(client.download_artifacts(result.run_id, "evaluation/per.md", str(tmp_path / "dl"))).read_text()
    assert "| dev | es |" in table and "avg (macro)" in table
    assert "| test | ru |" in capsys.readouterr().out


def _bad_model_dirs(tmp: Path) -> dict[str, Path]:
    from unispeech_core import PhoneTokenizer

    good = tiny_ctc_model(PhoneTokenizer.from_phones(["a b c"]).save(tmp / "vocab.json"), tmp / "good")
    cases = {"missing": tmp / "does-not-exist", "empty": tmp / "empty"}
    cases["empty"].mkdir()
    for name in ("truncated", "garbage_config", "no_vocab"):
        shutil.copytree(good, tmp / name)
        cases[name] = tmp / name
    data = (good / "model.safetensors").read_bytes()
    (cases["truncated"] / "model.safetensors").write_bytes(data[: len(data) // 2])
    (cases["garbage_config"] / "config.json").write_text("{not json")
    (cases["no_vocab"] / "vocab.json").unlink()
    from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining

    cases["pretraining_model"] = UniSpeechForPreTraining(UniSpeechConfig(**CI_MODEL, num_ctc_classes=7)).save_pretrained(
        tmp / "pretraining_model")
    shutil.copy(good / "vocab.json", cases["pretraining_model"])
    return cases


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "garbage_config", "no_vocab", "pretraining_model"])
def test_bad_model_path_fails_naming_it_before_ray_starts(tmp_path, capsys, case):
    import ray

    import jobs.evaluate

    bad = _bad_model_dirs(tmp_path)[case]
    assert not ray.is_initialized()
    with pytest.raises(SystemExit) as exc:
        jobs.evaluate.main([
            "--config", str(CONFIG), "--set", f"evaluate.model_path={bad}", "--set", f"data.path={tmp_path}",
            "--set", f"evaluate.output_dir={tmp_path / 'eval'}", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db",
        ])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert str(bad) in err or bad.name in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "m.db").exists()  # nothing tracked either


def test_new_run_tagged_with_model_path_when_no_training_run_is_known(tmp_path):
    from mlflow.tracking import MlflowClient

    from unispeech_platform.config.sections import TrackingSection
    from unispeech_platform.evaluate.tracking import MODEL_TAG, log_evaluation

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "per.md").write_text("| x |")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_evaluation(
        uri, TrackingSection(experiment="e"), run_id="0123456789abcdef", model_path="/models/x",
        metrics={"per/es": 0.5, "per/avg": 0.5}, out_dir=str(tmp_path / "out"), artifact_path="evaluation",
        job="evaluate",
    )
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags[MODEL_TAG] == "/models/x" and run.info.status == "FINISHED"
    assert run.data.metrics == {"per/es": 0.5, "per/avg": 0.5}


def test_ray_train_checkpoint_is_converted_and_keeps_its_run_id(tmp_path):
    """A step_N checkpoint (DeepSpeed module states + train_state.json + a config without `architectures`, as
    training writes it) becomes a transformers-format dir with the same weights, loaded with weights_only."""
    from unispeech_core import PhoneTokenizer, UniSpeechForCTC
    from unispeech_platform.evaluate.model_source import resolve_model

    vocab = PhoneTokenizer.from_phones(["a b c"]).save(tmp_path / "vocab.json")
    model = UniSpeechForCTC.from_pretrained(tiny_ctc_model(vocab, tmp_path / "job" / "model"))
    ckpt = tmp_path / "job" / "step_00000004"
    (ckpt / "ds").mkdir(parents=True)
    torch.save({"module": model.state_dict(), "param_shapes": None}, ckpt / "ds" / "mp_rank_00_model_states.pt")
    model.config.extra.pop("architectures", None)
    model.config.save_pretrained(ckpt)
    (ckpt / "train_state.json").write_text(json.dumps({"step": 4, "run_id": "0123abc"}))

    resolved = resolve_model(str(ckpt), tmp_path / "eval")
    assert resolved.run_id == "0123abc" and resolved.architecture == "UniSpeechForCTC"
    loaded = UniSpeechForCTC.from_pretrained(resolved.model_dir)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def _evaluate_untracked(model_dir, data, output_dir):
    """jobs.evaluate on a private local Ray (never one left running here), tracking off."""
    import jobs.evaluate

    with local_ray():
        return jobs.evaluate.main([
            "--config", str(CONFIG), "--set", f"evaluate.model_path={model_dir}", "--set", f"data.path={data}",
            "--set", f"evaluate.output_dir={output_dir}", "--set", "tracking.enabled=false",
        ])


@pytest.mark.slow
def test_corpus_without_vocab_is_scored_with_the_models_and_oov_phones_are_counted(corpus, tmp_path):
    """The corpus has no vocab.json and the model lacks two of its phones: evaluation runs with the model's
    vocabulary, keeps every utterance, and counts the phones outside it per language (scored as errors)."""
    import pyarrow.parquet as pq

    from unispeech_core import PhoneTokenizer

    bare = tmp_path / "corpus"
    shutil.copytree(corpus, bare, ignore=shutil.ignore_patterns("vocab.json"))
    corpus_phones = PhoneTokenizer.from_file(corpus / "vocab.json").phones
    missing = {corpus_phones[0], corpus_phones[-1]}
    reduced = PhoneTokenizer.from_phones(p for p in corpus_phones if p not in missing)
    model_dir = tiny_ctc_model(reduced.save(tmp_path / "vocab.json"), tmp_path / "model")
    expected = {}
    for part in sorted(bare.glob("lang=*/split=test/*.parquet")):
        lang = part.parent.parent.name.split("=")[1]
        phones = pq.read_table(part, columns=["phones"]).column("phones").to_pylist()
        expected[lang] = expected.get(lang, 0) + sum(p in missing for row in phones if row for p in row.split())
    assert sum(expected.values()) > 0  # the test means something only if those phones occur

    result = _evaluate_untracked(model_dir, bare, tmp_path / 'eval')
    scores = {s.lang: s for s in result.scores}
    for lang, count in expected.items():
        assert scores[lang].oov_phones == count and scores[lang].dropped == 0
        assert set(scores[lang].oov_list.split()) <= missing
    assert "OOV phones" in result.table and all(s.cer is None for s in result.scores)  # a phone model: no CER/WER


@pytest.mark.slow
def test_character_model_gets_cer_and_wer_equal_to_jiwers(corpus, tmp_path):
    """A character corpus (phones = the letters of `text`, `|` between words) and a character model: the job's
    CER/WER per language equal jiwer's on texts decoded utterance by utterance without Ray."""
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq

    from unispeech_core import PhoneTokenizer

    chars = tmp_path / "chars"
    shutil.copytree(corpus, chars, ignore=shutil.ignore_patterns("vocab.json"))
    texts: dict[str, str] = {}
    for part in chars.glob("lang=*/split=*/*.parquet"):
        table = pq.read_table(part)
        rows = table.select(["id", "text"]).to_pylist()
        texts.update((r["id"], r["text"]) for r in rows)
        letters = [" ".join("|" if c == " " else c for c in " ".join(r["text"].lower().split())) for r in rows]
        table = table.set_column(table.schema.get_field_index("phones"), "phones", pa.array(letters, pa.string()))
        pq.write_table(table, part)
    vocab = PhoneTokenizer.from_phones(
        p for part in chars.glob("lang=*/split=*/*.parquet") for p in pq.read_table(part).column("phones").to_pylist())
    assert "|" in vocab.vocab
    vocab.save(chars / "vocab.json")
    model_dir = tiny_ctc_model(chars / "vocab.json", tmp_path / "model")

    def norm(s: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", "", s.lower()).split())

    from unispeech_core import UniSpeechForCTC, ctc_greedy_decode
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.pipeline import iter_local_batches

    model, pairs = UniSpeechForCTC.from_pretrained(model_dir), {}
    with torch.inference_mode():
        for batch in iter_local_batches(DataConfig(path=str(chars), max_batch_size=1, labeled_only=True), "test"):
            out = model(batch["input_values"], batch["attention_mask"])
            hyp = "".join(ctc_greedy_decode(out.logits, out.frame_lengths, vocab)[0].split()).replace("|", " ")
            refs, hyps = pairs.setdefault(batch["lang"][0], ([], []))
            refs.append(norm(texts[batch["id"][0]]))
            hyps.append(norm(hyp))

    result = _evaluate_untracked(model_dir, chars, tmp_path / 'eval')
    assert set(pairs) == {"es", "ru"}
    for lang, (refs, hyps) in pairs.items():
        assert result.metrics[f"cer/{lang}"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
        assert result.metrics[f"wer/{lang}"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
        assert result.metrics[f"cer/{lang}"] > 0.3  # the random model errs: a comparison that can fail
    assert "CER" in result.table and "–" not in result.table.split("\n| test | es |")[1].split("\n")[0]


def test_group_norm_model_is_scored_on_each_row_alone_never_on_padding(tmp_path):
    """A group-norm model (configs/base.yaml) normalises its first conv layer over the whole input, padding
    included: jobs.evaluate gives it every row alone, so its hypotheses are the ones each utterance gets by itself,
    while a layer-norm model keeps the padded batch (its mask makes padding harmless)."""
    import numpy as np
    import pyarrow as pa

    from unispeech_core import PhoneTokenizer, UniSpeechConfig, UniSpeechForCTC, ctc_greedy_decode
    from unispeech_platform.data.decode import DECODED_SCHEMA
    from unispeech_platform.evaluate.inference import CTCPredictor

    tok = PhoneTokenizer({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{p: i + 4 for i, p in enumerate("aeiou")}})
    vocab = tok.save(tmp_path / "vocab.json")
    rng = np.random.default_rng(0)
    seconds = [0.9, 1.7, 2.6]
    waves = [rng.standard_normal(int(s * 16000)).astype("<f4") * np.linspace(0.2, 1.0, int(s * 16000), dtype="<f4")
             for s in seconds]
    table = pa.Table.from_pydict({
        "id": [f"u{i}" for i in range(3)], "lang": ["es"] * 3, "wave": [w.tobytes() for w in waves],
        "num_samples": [len(w) for w in waves], "labels": [[4, 5], [6, 7], [8, 4]], "error": [None] * 3,
        "detail": [None] * 3, "rate": [1.0] * 3,
    }, schema=DECODED_SCHEMA).append_column("split", pa.array(["test"] * 3))
    data = {"path": str(tmp_path), "vocab_path": str(vocab), "max_batch_size": 8, "max_batch_seconds": 40}

    def hypotheses(norm: str) -> tuple[list[str], list[str], list[str]]:
        """(scored by the predictor, each row alone, the padded batch) for a fresh model with this norm."""
        torch.manual_seed(0)
        model = UniSpeechForCTC(UniSpeechConfig(**{**CI_MODEL, "feat_extract_norm": norm, "conv_bias": True},
                                                vocab_size=len(tok), pad_token_id=tok.pad_token_id))
        model_dir = tmp_path / norm
        model.save_pretrained(model_dir)
        tok.save(model_dir)
        scored = CTCPredictor(str(model_dir), data).__call__(table).to_pydict()
        by_id = dict(zip(scored["id"], scored["hyp"]))
        model.eval()
        with torch.inference_mode():
            alone = [ctc_greedy_decode(*_logits(model, [w], with_mask=False), tok)[0] for w in waves]
            padded = ctc_greedy_decode(*_logits(model, waves, with_mask=True), tok)
        return [by_id[f"u{i}"] for i in range(3)], alone, padded

    scored, alone, padded = hypotheses("group")
    assert scored == alone
    assert padded != alone, "padding must change a group-norm model's output, or this test proves nothing"
    scored, alone, padded = hypotheses("layer")
    assert scored == alone == padded


def _logits(model, waves, *, with_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and frame lengths of waves collated as the data path does (normalised per row, zero padded)."""
    from unispeech_core.features import pad_batch

    batch = pad_batch([torch.from_numpy(w.copy()) for w in waves])
    out = model(batch["input_values"], batch["attention_mask"] if with_mask else None)
    return out.logits.float(), out.frame_lengths
