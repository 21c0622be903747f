"""Continued pretraining (``pretrain.init_from``): start UniSpeech pretraining from an existing model instead of
random weights — ours (an export, or a training checkpoint ``step_NNNNNNNN`` of any ZeRO stage, consolidated by
train/zero_consolidate.py), or a public UniSpeech / wav2vec2 checkpoint saved by transformers — on one's own audio.

Decided on the driver before Ray starts, so every mistake is one line: the model directory is resolved and
checked (names and shapes against the model the job will build, no tensor read), and the job's ``model:`` section
is merged over the checkpoint's architecture. Architecture keys (what shapes or wires the weights) must agree: a
job that sets one to another value exits 2 naming each (the weights could not be loaded into it). Everything else
(masking, loss weights, dropout, temperatures) may be overridden. Vocabulary sizes always follow the corpus
vocabulary; a head that the checkpoint lacks (a CTC model has no quantizer) or whose classes differ (transformers'
default CTC head has 80) starts fresh and is named in one warning. The workers get the merged, typed section.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining
from unispeech_platform.config import ConfigError, PretrainJobConfig
from unispeech_platform.config.model import ModelSection
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.train.checkpoint import init_model_dir, is_training_checkpoint
from unispeech_platform.train.preflight import read_model_config
from unispeech_platform.train.zero_consolidate import ConsolidationError

log = logging.getLogger("unispeech.train")

ARCHITECTURE_KEYS = frozenset({
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride", "conv_kernel", "conv_bias",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm", "layer_norm_eps",
    "num_codevectors_per_group", "num_codevector_groups", "codevector_dim", "proj_codevector_dim",
})
"""Keys that shape or wire the weights: a continued pretraining keeps the checkpoint's values."""
VOCABULARY_KEYS = frozenset({"vocab_size", "num_ctc_classes", "pad_token_id"})
"""Keys the corpus vocabulary decides (ModelSection.settings), never taken from the checkpoint."""


INIT_MODEL_DIR = "init_model"
"""Inside the run directory: where a ``runs:/`` or ``models:/`` init_from is downloaded (its own marked output)."""


def init_from_key(job: PretrainJobConfig) -> tuple[str, str | None]:
    """(the config key, its value) naming the job's initial weights: finetune.init_from or pretrain.init_from."""
    finetune = getattr(job, "finetune", None)
    if finetune is not None:
        return "finetune.init_from", finetune.init_from
    return "pretrain.init_from", job.pretrain.init_from


def fetch_init_from(job: PretrainJobConfig, layout: RunLayout) -> PretrainJobConfig:
    """The job with an MLflow URI as init_from (``runs:/<run_id>/model``, ``models:/<name>/<version>``) replaced
    by the model directory it names, downloaded on the driver (from tracking.uri's store) into
    ``<run dir>/init_model/``, where every worker reads it (tracking/model_uri.py); unchanged otherwise. Called
    after the run directory's checks, before Ray starts. JobSetupError (exit 3) naming the URI."""
    from unispeech_platform.runtime.output_paths import open_output_dir
    from unispeech_platform.tracking import resolve_tracking_uri
    from unispeech_platform.tracking.model_uri import claim_in, fetch_model, is_model_uri

    key, src = init_from_key(job)
    if not src or not is_model_uri(src):
        return job
    if not layout.is_local:
        raise JobSetupError(f"{key}={src}: a model URI is downloaded into the run directory, which needs a local "
                            f"(or NFS) checkpoint.storage_path, not {layout.storage}; download it and give its path")
    output = claim_in(lambda: open_output_dir(layout.output_dir(INIT_MODEL_DIR), "init_from", overwrite=None,
                                              flag=key)[0])  # the run directory exists only once a model came
    model_dir = fetch_model(src, output, resolve_tracking_uri(job.tracking))
    log.info("%s=%s: downloaded into %s", key, src, model_dir)
    section, name = key.split(".")
    return job.model_copy(update={section: getattr(job, section).model_copy(update={name: str(model_dir)})})


def continue_from(job: PretrainJobConfig, vocab: Mapping[str, int] | None) -> PretrainJobConfig:
    """The job with ``pretrain.init_from`` resolved to its model directory (absolute) and ``model:`` merged over
    that model's config; unchanged without init_from. ConfigError (exit 2): architecture keys that differ;
    JobSetupError (exit 3): no model there, a config.json that is not a UniSpeech/wav2vec2 config, or encoder weights
    that do not fit it."""
    src = job.pretrain.init_from
    if not src:
        return job
    checkpoint = is_training_checkpoint(src)
    try:
        with init_model_dir(src, "pretrain.init_from") as model_dir:
            model_dir = os.path.abspath(model_dir)
            saved = _saved_settings(model_dir)
            set_keys = job.model.overrides()
            clash = sorted(k for k in set_keys if k in ARCHITECTURE_KEYS and k in saved and set_keys[k] != saved[k])
            if clash:
                raise ConfigError("model." + ", model.".join(f"{k}={set_keys[k]!r}" for k in clash)
                                  + f" conflict with pretrain.init_from ({src if checkpoint else model_dir}: "
                                  + ", ".join(f"{k}={saved[k]!r}" for k in clash)
                                  + "): remove them, a continued pretraining keeps the checkpoint's architecture")
            merged = ModelSection.model_validate({**saved, **set_keys})
            _check_weights(model_dir, merged, vocab, shown=src if checkpoint else model_dir)
    except FileNotFoundError as e:
        raise JobSetupError(str(e).replace("finetune.init_from", "pretrain.init_from")) from None
    except ConsolidationError as e:
        raise JobSetupError(str(e)) from None
    start = os.path.abspath(src) if checkpoint else model_dir  # a checkpoint: each worker consolidates it again
    return job.model_copy(update={"model": merged,
                                  "pretrain": job.pretrain.model_copy(update={"init_from": start})})


def _saved_settings(model_dir: str) -> dict[str, Any]:
    """The ``model:`` keys of the checkpoint's config.json (validated like a model section), vocabulary keys left
    to the corpus."""
    raw = read_model_config(model_dir, "pretrain.init_from")
    try:
        config = UniSpeechConfig.from_dict(raw, convertible=True).to_dict()
    except (ValueError, TypeError) as e:
        raise JobSetupError(f"pretrain.init_from: {model_dir}: not a UniSpeech or wav2vec2 config: {e}") from None
    known = {k: v for k, v in config.items()
             if k in ModelSection.model_fields and k not in VOCABULARY_KEYS and v is not None}
    return json.loads(json.dumps(known))  # JSON types, as ModelSection.overrides() gives the job's keys


def _check_weights(model_dir: str, model: ModelSection, vocab: Mapping[str, int] | None, *, shown: str) -> None:
    """Names and shapes of the saved weights against the pretraining model the workers will build; one warning
    naming the parts that start fresh (and ``shown``, what the user named)."""
    try:
        info = UniSpeechForPreTraining.check_pretrained(model_dir, allow_new_head=True, reinit_mismatched_head=True,
                                                        convertible=True, **model.settings(vocab))
    except (OSError, ValueError) as e:  # WeightsMismatchError is a ValueError
        raise JobSetupError(f"pretrain.init_from: {e}") from None
    reshaped = sorted({k.split(".")[0] for k in info.reinitialised_keys})
    absent = sorted({k.split(".")[0] for k in info.missing_keys} - {"masked_spec_embed"} - set(reshaped))
    parts = ([f"{', '.join(reshaped)} (another shape there: classes or sizes differ)"] if reshaped else []) + (
        [f"{', '.join(absent)} (not in the checkpoint)"] if absent else [])
    if parts:
        log.warning("pretrain.init_from %s: newly initialised: %s", shown, "; ".join(parts))
