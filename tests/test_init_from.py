"""Continued pretraining (pretrain.init_from): from transformers' own UniSpeech / wav2vec2 / CTC directories (made
offline from a config), the architecture taken from the checkpoint, conflicts refused before Ray (exit 2), heads
that start fresh named once; and a real 2-worker run that continues 5 updates and exports a model transformers
loads (train/init_from.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from train_helpers import CI_CONFIG, ci_job, local_ray, make_tiny_corpus

from unispeech_platform.config import ConfigError, FinetuneJobConfig, load_config
from unispeech_platform.runtime.errors import JobSetupError

ARCH = yaml.safe_load(Path(CI_CONFIG).read_text())["model"]
"""The CI model's section: the transformers checkpoints below are built with the same architecture."""
TRANSFORMERS_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
                     "feat_extract_norm", "do_stable_layer_norm", "conv_bias", "codevector_dim",
                     "proj_codevector_dim", "num_codevectors_per_group", "num_negatives")


def _transformers_dir(tmp: Path, kind: str) -> Path:
    """A directory saved by transformers itself (random weights, offline): its default CTC head has 80 classes."""
    import torch
    import transformers

    torch.manual_seed(0)
    common = {k: ARCH[k] for k in TRANSFORMERS_KEYS}
    common["conv_stride"], common["conv_kernel"] = [5, 2, 2, 2, 2, 2, 2], [10, 3, 3, 3, 3, 2, 2]
    if kind == "unispeech":
        model = transformers.UniSpeechForPreTraining(transformers.UniSpeechConfig(**common))
    elif kind == "wav2vec2":
        model = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**common))
    else:  # a fine-tuned CTC model: no quantizer
        model = transformers.UniSpeechForCTC(transformers.UniSpeechConfig(**common, vocab_size=40))
    out = tmp / kind
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("init_from") / "corpus")


@pytest.fixture(scope="module")
def vocab(corpus):
    from unispeech_core import PhoneTokenizer

    return PhoneTokenizer.from_file(corpus / "vocab.json").vocab


def _job(corpus: Path, tmp: Path, src: Path, *sets: str, model: bool = False):
    """The CI job continued from ``src``; without ``model`` its ``model:`` section holds only the keys set here."""
    job = ci_job(corpus, tmp, "continued", f"pretrain.init_from={src}", *sets)
    if model:
        return job
    mine = {k.split("=")[0].removeprefix("model."): yaml.safe_load(k.split("=", 1)[1]) for k in sets
            if k.startswith("model.")}
    return job.model_copy(update={"model": type(job.model)(**mine)})


def test_the_checkpoint_decides_the_architecture_and_a_new_ctc_head_is_named(corpus, vocab, tmp_path, caplog):
    from unispeech_platform.train.init_from import continue_from

    src = _transformers_dir(tmp_path, "unispeech")
    with caplog.at_level(logging.WARNING, logger="unispeech.train"):
        job = continue_from(_job(corpus, tmp_path, src, "model.mask_time_prob=0.5"), vocab)
    assert job.pretrain.init_from == str(src)
    assert (job.model.hidden_size, job.model.num_hidden_layers, tuple(job.model.conv_dim)) == (32, 2, (32,) * 7)
    assert job.model.mask_time_prob == 0.5  # a key that may change: the job's
    assert job.model.num_ctc_classes is None  # the corpus vocabulary decides it on the workers
    (warning,) = [r.getMessage() for r in caplog.records if "newly initialised" in r.getMessage()]
    assert "ctc_proj (another shape there" in warning  # 80 classes saved, the corpus has fewer


def test_conflicting_architecture_keys_exit_2_naming_each(corpus, vocab, tmp_path):
    from unispeech_platform.train.init_from import continue_from

    src = _transformers_dir(tmp_path, "unispeech")
    job = _job(corpus, tmp_path, src, "model.hidden_size=64", "model.num_hidden_layers=2", "model.ctc_weight=0.3",
               model=True)
    with pytest.raises(ConfigError, match=r"model\.hidden_size=64 conflict with pretrain\.init_from .*hidden_size=32"):
        continue_from(job, vocab)


def test_wav2vec2_and_ctc_directories_start_pretraining_with_their_missing_parts_named(corpus, vocab, tmp_path,
                                                                                       caplog):
    from unispeech_core import UniSpeechForPreTraining
    from unispeech_platform.train.init_from import continue_from

    for kind, fresh in (("wav2vec2", "project_hid"), ("ctc", "quantizer")):
        caplog.clear()
        src = _transformers_dir(tmp_path, kind)
        with caplog.at_level(logging.WARNING, logger="unispeech.train"):
            job = continue_from(_job(corpus, tmp_path, src), vocab)
        (warning,) = [r.getMessage() for r in caplog.records if "newly initialised" in r.getMessage()]
        assert fresh in warning, (kind, warning)
        model = UniSpeechForPreTraining.from_pretrained(job.pretrain.init_from, allow_new_head=True,
                                                        reinit_mismatched_head=True, convertible=True,
                                                        **job.model.settings(vocab))
        import transformers

        theirs = transformers.AutoModel.from_pretrained(src)
        ours = dict(model.unispeech.named_parameters())
        for name, value in theirs.named_parameters():  # the encoder is theirs, tensor for tensor
            assert ours[name].detach().allclose(value.detach()), (kind, name)


def test_a_missing_model_or_a_finetune_job_is_refused(corpus, vocab, tmp_path):
    from unispeech_platform.train.init_from import continue_from

    with pytest.raises(JobSetupError, match="pretrain.init_from="):
        continue_from(_job(corpus, tmp_path, tmp_path / "nothing"), vocab)
    with pytest.raises(ConfigError, match="pretrain.init_from is for pretraining jobs"):
        load_config(FinetuneJobConfig, CI_CONFIG, [f"data.path={corpus}", f"pretrain.init_from={tmp_path}"])


@pytest.mark.slow
def test_continued_pretraining_from_transformers_trains_on_2_workers_and_exports_for_transformers(corpus, tmp_path):
    import transformers

    from unispeech_platform.train import run_training

    src = _transformers_dir(tmp_path, "unispeech")
    job = _job(corpus, tmp_path, src, "train.max_steps=5", "train.num_workers=2", "train.eval_every=0")
    with local_ray():
        result = run_training(job)
    model = transformers.UniSpeechForPreTraining.from_pretrained(result.export_dir)
    assert model.config.hidden_size == 32 and model.config.num_ctc_classes < 80  # the corpus vocabulary's head
    from unispeech_platform.tracking import metric_history

    assert [s for s, _ in metric_history(result.tracking_uri, result.run_id, "loss")] == [1, 2, 3, 4, 5]
    from mlflow.tracking import MlflowClient

    params = MlflowClient(result.tracking_uri).get_run(result.run_id).data.params
    assert params["pretrain.init_from"] == str(src)  # the source is recorded
    card = (Path(result.export_dir) / "README.md").read_text()
    assert str(src) in card
