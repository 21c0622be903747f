"""MLflow runs that look like MLflow runs (issue 32; docs/training.md#mlflow), against one real `mlflow server`
per module: the tags `mlflow.start_run` sets (user, source, git), MLflow's environment variables, system metrics,
the evaluation's own run nested under the training run at the model's update, the corpus as a dataset input,
the served pyfunc on file paths and bytes, greedy and beam, and `runs:/` / `models:/` URIs as model paths
(resolve_model, jobs.transcribe, init_from) against a version registered with MLflow's client.

One short fine-tuning job (`python -m jobs.finetune` as a subprocess, so its entry point, checkout and
environment are a user's) serves the run-level conventions; the evaluation and the pyfunc need no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow_helpers import kill_mlflow, serve_mlflow
from train_helpers import CI_CONFIG, ROOT, make_tiny_corpus

EXPERIMENT = "conventions-from-env"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow")
    proc, url = serve_mlflow(f"sqlite:///{base / 'mlflow.db'}", base / "server.log", artifacts=base / "artifacts")
    yield url
    kill_mlflow(proc)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny")


@pytest.fixture(scope="module")
def job(server, corpus, tmp_path_factory):
    """One 4-update CTC fine-tuning from scratch; its config names no experiment and no tracking URI, so
    MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME decide them; MLFLOW_RUN_CONTEXT adds a tag and
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING turns the sampler on (every second)."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("job")
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    del cfg["tracking"]["experiment"]
    (tmp / "job.yaml").write_text(yaml.safe_dump(cfg))
    sets = [f"data.path={corpus}", f"checkpoint.storage_path={tmp / 'runs'}", "checkpoint.name=conventions",
            "finetune.init_from=null", "data.labeled_only=true", "train.num_workers=1", "train.max_steps=4",
            "checkpoint.every_steps=4", "tracking.log_model=false"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
           "MLFLOW_RUN_CONTEXT": json.dumps({"team": "asr"}), "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "true",
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    for key in ("MLFLOW_RUN_ID", "RAY_ADDRESS"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "jobs.finetune", "--config", str(tmp / "job.yaml"),
                           *(a for s in sets for a in ("--set", s))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run, tmp / "runs" / "conventions"


def test_runs_carry_the_tags_start_run_sets(job):
    import getpass

    client, run, _ = job
    tags = run.data.tags
    assert tags["mlflow.user"] == getpass.getuser() != "unknown"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].endswith("jobs/finetune.py")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["team"] == "asr"  # $MLFLOW_RUN_CONTEXT, MLflow's variable for extra run tags
    assert tags["unispeech.job"] == "conventions" and run.info.status == "FINISHED"


def test_environment_variables_are_honoured(job, server, monkeypatch):
    from unispeech_platform.config import TrackingSection
    from unispeech_platform.tracking import open_run, resolve_experiment, resolve_tracking_uri

    client, run, _ = job  # the job above found its server and experiment through the environment only
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    assert resolve_experiment(TrackingSection()) == "from-env"
    assert resolve_experiment(TrackingSection(experiment="named")) == "named"  # a name the config sets wins
    assert resolve_tracking_uri(TrackingSection()) == server
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert resolve_experiment(TrackingSection()) == "unispeech"
    # $MLFLOW_RUN_ID: a run an orchestrator created is the job's run (reopened, tagged with the job)
    outer = client.create_run(run.info.experiment_id, run_name="orchestrated").info.run_id
    client.set_terminated(outer, "FINISHED")
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    assert open_run(server, TrackingSection(experiment="elsewhere"), "adopted", resume=False) == outer
    adopted = client.get_run(outer)
    assert adopted.info.status == "RUNNING" and adopted.data.tags["unispeech.job"] == "adopted"


def test_system_metrics_are_logged_when_enabled(job):
    client, run, _ = job
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps))) and len(steps) >= 2


def test_corpus_is_a_dataset_input_without_credentials(job, corpus):
    from unispeech_platform.config.data import DataConfig
    from unispeech_platform.data.dataset_record import describe_corpus

    _, run, _ = job
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
              for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    train = inputs["training"]
    expected = describe_corpus(DataConfig(path=str(corpus), labeled_only=True), ["train"])
    assert (train.name, train.digest, train.source_type) == ("tiny", expected.digest, "local")
    assert json.loads(train.source) == {"uri": str(corpus)}
    profile = json.loads(train.profile)
    assert profile["splits"] == ["train"] and profile["languages"] == ["es"] and profile["rows"] == 60
    assert 0 < profile["hours"] < 1
    assert "audio" in {c["name"] for c in json.loads(train.schema)["mlflow_colspec"]}
    assert json.loads(inputs["validation"].profile)["splits"] == ["dev"]
    # a login in an object-store path never reaches MLflow: the source is redacted before it is recorded
    from unispeech_platform.config.redact import redact_uri

    assert "s3cr3t" not in redact_uri("s3://AKIA:s3cr3t@bucket/corpus?secret_key=s3cr3t")


def test_evaluation_is_its_own_run_nested_at_the_models_update(job, tmp_path):
    from unispeech_platform.config import TrackingSection
    from unispeech_platform.evaluate.model_source import resolve_model
    from unispeech_platform.evaluate.tracking import log_evaluation

    client, run, run_dir = job
    model = resolve_model(str(run_dir), tmp_path)  # the best export, as jobs.evaluate picks it
    assert model.run_id == run.info.run_id and model.step == 4
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "per.md").write_text("| dev | es |")
    evaluation = log_evaluation(client.tracking_uri, TrackingSection(), run_id=model.run_id, model_path=str(run_dir),
                                metrics={"per/es": 0.9, "per/avg": 0.9}, out_dir=str(tmp_path / "out"),
                                artifact_path="evaluation", job="evaluate", step=model.step)
    nested = client.get_run(evaluation)
    assert nested.data.tags["mlflow.parentRunId"] == run.info.run_id and nested.info.status == "FINISHED"
    assert nested.info.experiment_id == run.info.experiment_id and nested.data.tags["mlflow.user"]
    assert [m.step for m in client.get_metric_history(evaluation, "per/avg")] == [4]
    assert not any(k.startswith("per/") for k in client.get_run(run.info.run_id).data.metrics)
    assert "dev_per" in client.get_run(run.info.run_id).data.metrics  # training's dev metric stays in training


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """A tiny CTC model with peaky outputs (special tokens pushed down, as training does), logged as the run's
    MLflow Model through the function the driver uses, and loaded back with mlflow.pyfunc."""
    import mlflow
    import torch
    from parity_utils import TINY

    import unispeech_core as uc
    from unispeech_platform.tracking.model_logging import log_phone_model
    from unispeech_platform.tracking.store import RunStore

    out = tmp_path_factory.mktemp("served") / "model"
    tokenizer = uc.PhoneTokenizer.from_phones(["a", "b", "t͡ʃ", "ə", "ʃ", "ŋ"])
    torch.manual_seed(0)
    # a layer-norm feature encoder: the pyfunc pads such a model's batches
    config = uc.UniSpeechConfig(**{**TINY, "vocab_size": len(tokenizer), "feat_extract_norm": "layer"})
    model = uc.UniSpeechForCTC(config)
    with torch.no_grad():
        for special in uc.tokenizer.SPECIAL_TOKENS:
            model.lm_head.bias[tokenizer.vocab[special]] = -100.0
    model.save_pretrained(str(out))
    tokenizer.save(out / "vocab.json")
    store = RunStore(server)
    run_id = store.create_run(store.experiment_id("conventions-pyfunc"), "served")
    uri = log_phone_model(server, run_id, str(out))
    mlflow.set_tracking_uri(server)
    try:
        yield mlflow.pyfunc.load_model(uri), out
    finally:
        mlflow.set_tracking_uri("")


def _files(tmp: Path) -> list[Path]:
    import soundfile as sf

    rng = np.random.default_rng(1)
    paths = []
    for i, (rate, seconds, channels) in enumerate([(8_000, 0.7, 2), (16_000, 1.2, 1), (22_050, 0.4, 1)]):
        wave = 0.3 * rng.standard_normal((int(rate * seconds), channels)).astype(np.float32)
        path = tmp / f"u{i}.{'flac' if i == 1 else 'wav'}"
        sf.write(path, wave, rate)
        paths.append(path)
    return paths


def test_pyfunc_takes_paths_and_bytes_greedy_and_beam(served, tmp_path):
    import pandas as pd

    from unispeech_core.audio import decode_audio, to_mono_16k

    model, _ = served
    paths = _files(tmp_path)
    waves = [to_mono_16k(d.wave, d.sample_rate) for d in (decode_audio(p.read_bytes(), None, None) for p in paths)]
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["waveform", "audio", "path"]
    assert {p.name for p in signature.params.params} == {"decoder", "beam_size", "batch_size"}
    greedy = model.predict(pd.DataFrame({"waveform": [w.astype(np.float64) for w in waves]}))
    assert all(greedy) and len(set(greedy)) == 3  # phones, different per utterance
    assert model.predict(pd.DataFrame({"path": [str(p) for p in paths]})) == greedy
    assert model.predict(pd.DataFrame({"audio": [p.read_bytes() for p in paths]})) == greedy
    one_by_one = [model.predict(pd.DataFrame({"path": [str(p)]}), params={"batch_size": 1})[0] for p in paths]
    assert one_by_one == greedy  # a padded batch decodes as each utterance alone
    beam = model.predict(pd.DataFrame({"path": [str(p) for p in paths]}), params={"decoder": "beam", "beam_size": 8})
    assert beam == greedy  # a peaky model: the beam search finds the best path too
    assert model.unwrap_python_model()._beams  # ... and it did run
    with pytest.raises(Exception, match="undecodable"):
        model.predict(pd.DataFrame({"audio": [b"not audio at all"]}))


REGISTERED = "conventions-phones"


@pytest.fixture(scope="module")
def registered(served, server):
    """The served model's run and version 1 of a registered model made from it with MLflow's client (alias
    ``champion``)."""
    import mlflow
    from mlflow import MlflowClient

    model, out = served
    run_id = model.metadata.run_id
    mlflow.set_tracking_uri(server)
    version = mlflow.register_model(f"runs:/{run_id}/model", REGISTERED)
    assert version.version == "1"
    MlflowClient(server).set_registered_model_alias(REGISTERED, "champion", "1")
    return run_id, out


@pytest.mark.parametrize("uri", ["runs:/{run_id}/model", f"models:/{REGISTERED}/1", f"models:/{REGISTERED}@champion"])
def test_a_model_uri_resolves_to_the_logged_model_directory(registered, server, tmp_path, uri):
    from unispeech_platform.evaluate.model_source import resolve_model

    run_id, out = registered
    resolved = resolve_model(uri.format(run_id=run_id), tmp_path / "work", tracking_uri=server)
    assert resolved.architecture == "UniSpeechForCTC"
    assert resolved.model_dir == str(tmp_path / "work" / "model")  # inside the job's own (marked) output
    for name in ("config.json", "model.safetensors", "vocab.json"):
        assert (tmp_path / "work" / "model" / name).read_bytes() == (out / name).read_bytes()
    assert "model/model.safetensors" in json.loads((tmp_path / "work" / ".unispeech-output.json").read_text())["made"]


def test_transcribe_takes_a_registered_model(registered, server, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from jobs import transcribe as job

    _, out = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    wave = 0.3 * np.random.default_rng(5).standard_normal(24_000).astype(np.float32)
    sf.write(tmp_path / "u.flac", wave, 16_000)
    rows = {}
    for name, model in (("registry", f"models:/{REGISTERED}/1"), ("local", str(out))):
        summary = job.main(["--model", model, "--out", str(tmp_path / f"{name}.jsonl"), "--ray", "never",
                            "--no-progress", str(tmp_path / "u.flac")])
        assert summary.transcribed == 1
        rows[name] = json.loads((tmp_path / f"{name}.jsonl").read_text())
    assert rows["registry"]["text"] and rows["registry"]["tokens"] == rows["local"]["tokens"]
    assert (tmp_path / "registry-model" / "model" / "config.json").is_file()  # downloaded beside --out
    capsys.readouterr()  # MLflow's download progress so far
    with pytest.raises(SystemExit) as done:  # a version that does not exist: one line naming the URI, exit 3
        job.main(["--model", f"models:/{REGISTERED}/7", "--out", str(tmp_path / "x.jsonl"), "--ray", "never",
                  str(tmp_path / "u.flac")])
    assert done.value.code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"setup error: model URI 'models:/{REGISTERED}/7'") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x-model").exists()


def test_init_from_takes_a_registered_model(registered, server, tmp_path):
    """finetune.init_from (and so jobs.lid's) and pretrain.init_from: the driver downloads the model into the run
    directory before Ray starts, and the workers get its path (train/init_from.py)."""
    from train_helpers import ci_finetune_job, ci_job

    from unispeech_platform.runtime.errors import JobSetupError
    from unispeech_platform.runtime.layout import RunLayout
    from unispeech_platform.train.driver import with_local_init

    _, out = registered
    finetune = ci_finetune_job(tmp_path / "corpus", tmp_path, "ft", f"models:/{REGISTERED}@champion",
                               f"tracking.uri={server}")
    fetched = with_local_init(finetune, RunLayout.of(finetune.checkpoint))
    assert fetched.finetune.init_from == str(tmp_path / "runs" / "ft" / "init_model")
    assert (tmp_path / "runs" / "ft" / "init_model" / "model.safetensors").read_bytes() == \
        (out / "model.safetensors").read_bytes()
    pretrain = ci_job(tmp_path / "corpus", tmp_path, "pt", f"pretrain.init_from=models:/{REGISTERED}/1",
                      f"tracking.uri={server}")
    assert with_local_init(pretrain, RunLayout.of(pretrain.checkpoint)).pretrain.init_from == \
        str(tmp_path / "runs" / "pt" / "init_model")
    missing = ci_finetune_job(tmp_path / "corpus", tmp_path, "bad", f"models:/{REGISTERED}@nobody",
                              f"tracking.uri={server}")
    with pytest.raises(JobSetupError, match=f"model URI 'models:/{REGISTERED}@nobody'"):
        with_local_init(missing, RunLayout.of(missing.checkpoint))
    assert not (tmp_path / "runs" / "bad").exists()  # no run directory: the job can start again without --resume


def test_a_model_uri_needs_an_existing_store_and_exports(registered, server, tmp_path):
    """No store at the URI's tracking URI: one line, and no empty sqlite file or store made outside the job's
    output. jobs.export takes a URI as its model (--tracking-uri)."""
    from jobs import export as export_job
    from unispeech_platform.evaluate.model_source import resolve_model
    from unispeech_platform.tracking.model_uri import ModelURIError

    for store in (f"sqlite:///{tmp_path / 'none.db'}", (tmp_path / "mlruns").as_uri()):
        with pytest.raises(ModelURIError, match="there is no MLflow store at"):
            resolve_model(f"models:/{REGISTERED}/1", tmp_path / "work", tracking_uri=store)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    _, out = registered
    export_job.main(["--model", f"models:/{REGISTERED}/1", "--format", "hf", "--out", str(tmp_path / "hf"),
                     "--tracking-uri", server])
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
