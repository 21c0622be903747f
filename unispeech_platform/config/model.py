"""The ``model:`` section: every UniSpeechConfig field with its type and range, checked before Ray starts.

Generated from ``unispeech_core.UniSpeechConfig`` (names, types, docstrings), so the two cannot drift apart; the
ranges below are ours. Every field defaults to None = "not set here": UniSpeechConfig's default applies, and the
vocabulary-derived sizes (vocab_size, num_ctc_classes, pad_token_id) are filled from the corpus vocabulary by
``ModelSection.settings`` / ``unispeech_config``, the one place a UniSpeechConfig is built from settings. Only the
keys a config sets are dumped, logged and shipped to workers (inside the typed job config).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, create_model, model_serializer, model_validator

from unispeech_core import PhoneTokenizer, UniSpeechConfig
from unispeech_platform.config.base import Section

_PROBABILITY = {"ge": 0.0, "le": 1.0}
_POSITIVE_INT = {"ge": 1}
_NON_NEGATIVE = {"ge": 0}
_POSITIVE = {"gt": 0.0}

RANGES: dict[str, dict[str, float]] = {
    **dict.fromkeys(
        ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "mask_time_length", "mask_feature_length",
         "num_codevectors_per_group", "num_codevector_groups", "num_negatives", "codevector_dim",
         "proj_codevector_dim", "classifier_proj_size", "num_ctc_classes"), _POSITIVE_INT),
    **dict.fromkeys(
        ("mask_time_min_masks", "mask_feature_min_masks", "pad_token_id", "bos_token_id", "eos_token_id",
         "diversity_loss_weight"), _NON_NEGATIVE),
    **dict.fromkeys(
        ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout", "feat_quantizer_dropout",
         "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob", "replace_prob", "ctc_weight"),
        _PROBABILITY),
    **dict.fromkeys(
        ("initializer_range", "layer_norm_eps", "contrastive_logits_temperature", "max_gumbel_temperature",
         "min_gumbel_temperature"), _POSITIVE),
    "gumbel_temperature_decay": {"gt": 0.0, "le": 1.0},
}
"""Allowed ranges by field (pydantic Field constraints)."""

CHOICES: dict[str, Any] = {
    "hidden_act": Literal["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "selu", "silu", "swish", "tanh"],
    "feat_extract_activation": Literal["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "selu", "silu", "swish",
                                       "tanh"],
    "feat_extract_norm": Literal["group", "layer"],
    "ctc_loss_reduction": Literal["mean", "sum"],
    "codevector_init": Literal["uniform", "normal"],
    "conv_dim": tuple[typing.Annotated[int, Field(ge=1)], ...],
    "conv_stride": tuple[typing.Annotated[int, Field(ge=1)], ...],
    "conv_kernel": tuple[typing.Annotated[int, Field(ge=1)], ...],
}
"""Fields whose type is narrower than UniSpeechConfig's annotation."""

CLASSIFICATION_KEYS: dict[str, Any] = {
    "num_labels": (int | None, Field(None, ge=1, description="Classification: number of labels (LABEL_i).")),
    "label2id": (dict[str, int] | None, Field(None, description="Classification: label -> id (inverse of id2label).")),
}
"""transformers' aliases of id2label, accepted as in a config.json."""


def _attribute_docs(cls: type) -> dict[str, str]:
    """Field -> the docstring under it in the class body (UniSpeechConfig documents each field that way)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


class _ModelSectionBase(Section):
    """Behaviour shared by the generated class: only set keys are dumped; the whole config must build."""

    @model_serializer(mode="wrap")
    def _only_set_keys(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    @model_validator(mode="after")
    def _builds(self) -> _ModelSectionBase:
        """Cross-field rules (heads divide hidden_size, conv lists of equal length, ...) are UniSpeechConfig's."""
        self.unispeech_config()
        return self

    def overrides(self) -> dict[str, Any]:
        """The set keys, as UniSpeechConfig keyword arguments."""
        return self.model_dump(mode="json")

    def settings(self, vocab: Mapping[str, int] | None = None) -> dict[str, Any]:
        """UniSpeechConfig keyword arguments: the set keys, and with the corpus vocabulary (phone -> id) the sizes
        it decides where the section leaves them unset: vocab_size = num_ctc_classes = its phones incl. the
        blank, which is the pad id (docs/architecture.md#objective). Also the overrides of a from_pretrained."""
        kwargs = self.overrides()
        if vocab is not None:
            tokenizer = PhoneTokenizer(dict(vocab))
            kwargs.setdefault("vocab_size", len(tokenizer))
            kwargs.setdefault("num_ctc_classes", len(tokenizer))
            kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        return kwargs

    def unispeech_config(self, vocab: Mapping[str, int] | None = None) -> UniSpeechConfig:
        """The model's config built from these settings (+ the corpus vocabulary): the one place that does."""
        return UniSpeechConfig(**self.settings(vocab))

    def effective(self, name: str) -> Any:
        """A field as the model sees it: the set value, else UniSpeechConfig's default (e.g. ctc_weight 0.5 for
        a preset that leaves it unset, where the section holds None)."""
        value = getattr(self, name)
        return value if value is not None else getattr(self.unispeech_config(), name)


def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(UniSpeechConfig)
    docs = _attribute_docs(UniSpeechConfig)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(UniSpeechConfig):
        if f.name == "extra":
            continue
        kind = CHOICES.get(f.name) or hints[f.name]
        fields[f.name] = (kind | None, Field(None, description=docs.get(f.name, f.name), **RANGES.get(f.name, {})))
    return {**fields, **CLASSIFICATION_KEYS}


ModelSection = create_model(
    "ModelSection",
    __base__=_ModelSectionBase,
    __doc__="UniSpeechConfig overrides (transformers' field names); unset keys keep UniSpeechConfig's defaults.",
    **_fields(),
)


def check_model_json(raw: dict[str, Any]) -> None:
    """A model directory's config.json (parsed) against the rules of the ``model:`` section: the keys we model
    must have their exact JSON type (strict: ``"64"`` is not a width, ``1`` not a flag), lie in range, not be
    null, and build a UniSpeechConfig; other keys (transformers' own, e.g. ``architectures``) pass through.
    Raises ValueError naming the first bad key. The callers (evaluation, fine-tuning's init_from) add the file
    and exit 3 before Ray starts: the loaders on the workers read the same file as plain JSON."""
    import json

    from pydantic import ValidationError

    known = {k: v for k, v in raw.items() if k in ModelSection.model_fields}
    nulls = [k for k, v in known.items() if v is None and k not in _NULLABLE]
    if nulls:
        raise ValueError(f"{nulls[0]}: must not be null")
    try:
        ModelSection.model_validate_json(json.dumps(known), strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<config>"
        got = f" (got {first['input']!r})" if first["loc"] else ""
        raise ValueError(f"{key}: {first['msg']}{got}") from None


_NULLABLE = {name for name, hint in typing.get_type_hints(UniSpeechConfig).items()
             if type(None) in typing.get_args(hint)} | set(CLASSIFICATION_KEYS)
"""config.json keys that may be null (UniSpeechConfig's optional fields, transformers' label aliases)."""
