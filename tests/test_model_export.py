"""Exports people can use (docs/training.md#the-exported-model): the directory `export_model` writes loads in
transformers' `pipeline("automatic-speech-recognition")` and `AutoProcessor` (transformers is the oracle), and
the MLflow Model a fine-tuning job logs (tracking.model_logging, the function the driver calls at the end of a
job) loads with `mlflow.pyfunc.load_model("runs:/<id>/model")` and predicts phone strings.

A real one-process DeepSpeed engine does the export (no Ray: the export is rank 0's own code)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from parity_utils import TINY

import unispeech_core as uc
from unispeech_core.model_card import ModelCard, render_model_card

PHONES = ["a", "aː", "b", "t͡ʃ", "ə", "ɪ", "ʃ", "ŋ"]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, process_group):
    """A tiny random UniSpeechForCTC exported by `export_model` from a real DeepSpeed engine. The special tokens'
    biases are pushed down, as training does (no target is blank-only or <s>/</s>): greedy decoding emits phones,
    and the pipeline, which keeps special tokens other than the blank, shows the same string as ours."""
    import deepspeed

    from unispeech_platform.config.sections import OptimSection, TrainSection
    from unispeech_platform.train.checkpoint import export_model
    from unispeech_platform.train.engine import deepspeed_config, param_groups

    tokenizer = uc.PhoneTokenizer.from_phones(PHONES)
    torch.manual_seed(0)
    model = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, "vocab_size": len(tokenizer)}))
    with torch.no_grad():
        for special in uc.tokenizer.SPECIAL_TOKENS:
            model.lm_head.bias[tokenizer.vocab[special]] = -100.0
    train = TrainSection(zero_stage=0, use_gpu=False, grad_accum_steps=1)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.01),
                                      config=deepspeed_config(train, OptimSection(), world_size=1),
                                      dist_init_required=False)
    out = str(tmp_path_factory.mktemp("run") / "model")
    card = ModelCard(name="tiny", task="ctc", data=["corpus `s3://bucket/corpus`"], languages=["en", "de"],
                     step=7, metrics={"dev_per": 0.42}, per_by_language={"en": 0.4, "de": 0.44},
                     command="python -m jobs.finetune --config CONFIG.yaml")
    export_model(engine, out, tokenizer, card)
    return out


def _waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(np.float32) for n in (16_000, 9_000)]


def _our_transcripts(directory: str, waves: list[np.ndarray]) -> list[str]:
    model = uc.UniSpeechForCTC.from_pretrained(directory)
    tokenizer = uc.PhoneTokenizer.from_file(directory)
    out = []
    for wave in waves:  # one at a time, as the pipeline does
        with torch.no_grad():
            o = model(**uc.pad_batch([wave]))
        out += uc.ctc_greedy_decode(o.logits, o.frame_lengths, tokenizer)
    return out


def test_export_holds_the_processor_files_and_a_model_card(export_dir):
    names = set(os.listdir(export_dir))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.json", "README.md"} <= names, names
    card = open(os.path.join(export_dir, "README.md"), encoding="utf-8").read()
    assert "pipeline_tag: automatic-speech-recognition" in card
    assert "| en | 40.00% |" in card and "dev_per" in card and "python -m jobs.finetune" in card
    assert json.load(open(os.path.join(export_dir, "vocab.json"), encoding="utf-8"))["t͡ʃ"] > 3


def test_export_loads_in_transformers_pipeline_and_auto_processor(export_dir):
    from transformers import AutoProcessor, pipeline

    processor = AutoProcessor.from_pretrained(export_dir)
    assert type(processor).__name__ == "Wav2Vec2Processor"
    assert processor.feature_extractor.sampling_rate == 16_000
    assert processor.tokenizer.decode(processor.tokenizer("t͡ʃ aː ŋ").input_ids) == "t͡ʃ aː ŋ"

    waves = _waves()
    asr = pipeline("automatic-speech-recognition", model=export_dir, device="cpu")
    texts = [asr(w.copy())["text"] for w in waves]
    ours = _our_transcripts(export_dir, waves)
    assert all(texts), texts
    assert texts == ours  # the same phones as our own greedy decoding: same features, weights and vocabulary
    assert set(" ".join(texts).split()) <= set(PHONES)


@pytest.fixture(scope="module")
def logged_run(export_dir, tmp_path_factory):
    """A run in a real sqlite store whose end is recorded by `log_job_end` as a finished CTC job's driver does
    (train/driver.py): the export becomes the MLflow Model, registered as `tiny-phones`."""
    from unispeech_platform.tracking import log_job_end
    from unispeech_platform.tracking.store import RunStore

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    store = RunStore(uri)
    run_id = store.create_run(store.experiment_id("export-test"), "tiny")
    warnings: list[str] = []
    log_job_end(uri, run_id, status="FINISHED", artifact_dirs={}, spool=str(tmp / "spool.jsonl"),
                warn=warnings.append, phone_model=export_dir, registered_model="tiny-phones")
    assert not warnings, warnings
    return uri, run_id


def test_mlflow_model_loads_and_predicts_phone_strings(export_dir, logged_run):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    uri, run_id = logged_run
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        signature = model.metadata.signature
        assert signature.inputs.input_names() == ["waveform", "audio", "path"]
        assert signature.outputs.to_dict()[0]["type"] == "string"
        waves = _waves()
        texts = model.predict(pd.DataFrame({"waveform": [w.astype(np.float64) for w in waves]}))
        assert texts == _our_transcripts(export_dir, waves) and all(texts)
        # what `mlflow models serve` gets: JSON records, checked against the signature as the server does
        serving = mlflow.models.convert_input_example_to_serving_input(
            pd.DataFrame({"waveform": [waves[1].tolist()]}))
        served = mlflow.models.validate_serving_input(f"runs:/{run_id}/model", serving)
        assert list(served) == texts[1:]
        with pytest.raises(Exception, match="waveform"):  # a wrong column is named
            model.predict(pd.DataFrame({"samples": [waves[0].tolist()]}))

        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        versions = client.search_model_versions("name='tiny-phones'")
        assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == run_id
        registered = mlflow.pyfunc.load_model("models:/tiny-phones/1")
        assert registered.predict(pd.DataFrame({"waveform": [waves[0]]})) == texts[:1]
    finally:
        mlflow.set_tracking_uri("")


def test_no_registry_version_without_a_registered_name(export_dir, tmp_path):
    from mlflow import MlflowClient

    from unispeech_platform.tracking.model_logging import log_phone_model
    from unispeech_platform.tracking.store import RunStore

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = RunStore(uri)
    run_id = store.create_run(store.experiment_id("export-test"), "plain")
    assert log_phone_model(uri, run_id, export_dir) == f"runs:/{run_id}/model"
    assert MlflowClient(uri).search_registered_models() == []
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        log_phone_model(uri, run_id, str(tmp_path))


def test_mlflow_model_is_spooled_while_the_server_is_away_and_logged_on_replay(export_dir, tmp_path, dead_uri):
    """A fine-tuning job ending during an outage: the MLflow Model waits in the spool (before the end) and is
    logged, and registered, when the next start replays it."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from unispeech_platform.tracking import BestEffortStore, Spool, log_job_end
    from unispeech_platform.tracking.store import RunStore

    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = RunStore(sqlite)
    run_id = store.create_run(store.experiment_id("export-test"), "outage")
    spool, lines = str(tmp_path / "spool.jsonl"), []
    log_job_end(dead_uri, run_id, status="FINISHED", artifact_dirs={}, spool=spool, warn=lines.append,
                phone_model=export_dir, registered_model="outage-phones")
    assert [r["kind"] for r in Spool(spool).pending] == ["model", "end"], lines

    assert BestEffortStore(sqlite, Spool(spool), warn=lines.append).flush(force=True)
    mlflow.set_tracking_uri(sqlite)
    try:
        texts = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(
            pd.DataFrame({"waveform": [_waves()[1].tolist()]}))
    finally:
        mlflow.set_tracking_uri("")
    assert texts == _our_transcripts(export_dir, _waves()[1:])
    assert [v.run_id for v in MlflowClient(sqlite).search_model_versions("name='outage-phones'")] == [run_id]
    assert MlflowClient(sqlite).get_run(run_id).info.status == "FINISHED"


def test_dev_per_per_language_becomes_the_cards_table():
    """CTC dev evaluation scores each language apart (dev_per/<lang>) and the card shows them as its PER table."""
    from unispeech_platform.config.jobs import FinetuneJobConfig
    from unispeech_platform.train.model_card import job_model_card
    from unispeech_platform.train.tasks.ctc import CTCTask

    items = [("pt", "a b c d", "a b c d"), ("pt", "a b", "a x"), ("fr", "e f g h", "e f"), ("fr", "", "z")]
    dev = CTCTask.summarize(None, {"dev_loss": 3.0, "dev_batches": 2.0}, items)
    assert dev == {"dev_loss": 1.5, "dev_per": pytest.approx(3 / 10), "dev_per/fr": 0.5,
                   "dev_per/pt": pytest.approx(1 / 6)}
    job = FinetuneJobConfig.model_validate({"data": {"path": "corpus"}, "finetune": {"task": "ctc"},
                                            "checkpoint": {"name": "ft"}})
    card = job_model_card(job, 40, dev)
    assert card.per_by_language == {"fr": 0.5, "pt": pytest.approx(1 / 6)}
    assert set(card.metrics) == {"dev_loss", "dev_per"}
    text = render_model_card(card)
    assert "PER per language on the dev split at update 40" in text and "| fr | 50.00% |" in text
