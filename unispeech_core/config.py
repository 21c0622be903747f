"""UniSpeechConfig: transformers' field names and code defaults, plus the multitask-loss fields.

A config.json written by transformers loads here and ours loads in transformers. Keys we do not know (e.g.
``architectures``, ``transformers_version``, adapter settings) are kept in ``extra`` and written back, never dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"


CONVERTIBLE_MODEL_TYPES = ("wav2vec2",)
"""Configs of these model types read as a UniSpeechConfig: transformers' Wav2Vec2Config has the same field names
for everything the two architectures share."""


@dataclass(init=False)
class UniSpeechConfig:
    model_type = "unispeech"
    """Written into config.json. Reading with ``convertible=True`` also accepts CONVERTIBLE_MODEL_TYPES (same field
    names), so a wav2vec2 checkpoint can start UniSpeech pretraining (unispeech_core/checkpoint.py maps its weight
    names)."""

    vocab_size: int = 32
    """Size of the CTC head's vocabulary (UniSpeechForCTC.lm_head); blank = pad_token_id."""
    hidden_size: int = 768
    """Transformer width."""
    num_hidden_layers: int = 12
    """Number of transformer layers."""
    num_attention_heads: int = 12
    """Attention heads per layer; must divide hidden_size."""
    intermediate_size: int = 3072
    """Feed-forward inner width."""
    hidden_act: str = "gelu"
    """Feed-forward activation (gelu, relu, gelu_new, silu)."""
    hidden_dropout: float = 0.1
    """Dropout on residual branches and after the positional embedding."""
    activation_dropout: float = 0.1
    """Dropout inside the feed-forward block."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    feat_proj_dropout: float = 0.0
    """Dropout after the feature projection."""
    feat_quantizer_dropout: float = 0.0
    """Dropout on the features fed to the quantizer."""
    final_dropout: float = 0.1
    """Dropout before the CTC heads (lm_head, ctc_proj)."""
    layerdrop: float = 0.1
    """Probability of skipping a whole transformer layer in training (LayerDrop)."""
    initializer_range: float = 0.02
    """Std of the normal init of linear layers."""
    layer_norm_eps: float = 1e-5
    """Epsilon of the transformer layer norms."""
    feat_extract_norm: str = "group"
    """'group': GroupNorm on the first conv only (base); 'layer': LayerNorm after every conv (large)."""
    feat_extract_activation: str = "gelu"
    """Activation of the conv feature encoder and the positional conv."""
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    """Channels of each conv layer of the feature encoder."""
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    """Stride of each conv layer (product = samples per frame, 320 = 20 ms at 16 kHz)."""
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    """Kernel of each conv layer (receptive field 400 samples with the defaults)."""
    conv_bias: bool = False
    """Whether the feature-encoder convs have a bias."""
    num_conv_pos_embeddings: int = 128
    """Kernel size of the positional conv."""
    num_conv_pos_embedding_groups: int = 16
    """Groups of the positional conv."""
    do_stable_layer_norm: bool = False
    """Pre-LN transformer layers (True, large models) or post-LN (False, base models)."""
    apply_spec_augment: bool = True
    """Master switch of SpecAugment masking in the base model."""
    mask_time_prob: float = 0.05
    """Fraction of frames chosen as span starts ×mask_time_length (upper bound on the masked fraction)."""
    mask_time_length: int = 10
    """Length of each time mask span, in frames."""
    mask_time_min_masks: int = 2
    """Minimum number of time spans per utterance."""
    mask_feature_prob: float = 0.0
    """Like mask_time_prob, along the channel axis."""
    mask_feature_length: int = 10
    """Length of each channel mask span."""
    mask_feature_min_masks: int = 0
    """Minimum number of channel spans."""
    num_codevectors_per_group: int = 320
    """V: entries per quantizer codebook."""
    num_codevector_groups: int = 2
    """G: codebooks of the product quantizer."""
    contrastive_logits_temperature: float = 0.1
    """κ: cosine similarities are divided by it."""
    num_negatives: int = 100
    """Distractors per masked frame, sampled from masked frames of the same utterance."""
    codevector_dim: int = 256
    """Width of a quantized vector (G codevectors of codevector_dim/G concatenated)."""
    proj_codevector_dim: int = 256
    """Width of project_q's output."""
    diversity_loss_weight: float = 0.1
    """w of the diversity term."""
    ctc_loss_reduction: str = "mean"
    """Reduction of UniSpeechForCTC's loss: 'mean' (per target length, then batch mean) or 'sum'."""
    ctc_zero_infinity: bool = False
    """Zero infinite CTC losses (inputs too short to align)."""
    use_weighted_layer_sum: bool = False
    """Classification: learned softmax-weighted sum of all hidden states instead of the last."""
    classifier_proj_size: int = 256
    """Classification: width of the projector before mean pooling."""
    num_ctc_classes: int = 80
    """Phone classes (incl. blank) of the pretraining CTC head ctc_proj."""
    pad_token_id: int = 0
    """Id of <pad>, which is also the CTC blank."""
    bos_token_id: int = 1
    """Id of <s>."""
    eos_token_id: int = 2
    """Id of </s>."""
    replace_prob: float = 0.5
    """Probability that a transformer output is replaced by its quantized feature before the CTC head (training)."""
    id2label: dict[int, str] | None = None
    """Classification labels; None means two generic labels, as in transformers."""
    # -- ours: the multitask objective and the Gumbel schedule ---------------------------------------------
    ctc_weight: float = 0.5
    """α in loss = α·L_ctc + (1−α)·(L_contrastive + w·L_diversity); 0 = wav2vec2-style, 1 = supervised only."""
    max_gumbel_temperature: float = 2.0
    """Gumbel softmax temperature at step 0."""
    min_gumbel_temperature: float = 0.5
    """Floor of the Gumbel temperature (authors: 0.1, wav2vec2 base: 0.5)."""
    gumbel_temperature_decay: float = 0.999995
    """Per-update multiplicative decay of the Gumbel temperature."""
    codevector_init: str = "uniform"
    """Fresh quantizer codebook: 'uniform' U(0,1) as transformers and fairseq do, or 'normal': zero-mean with the
    same mean square, so the projected targets do not start collinear (docs/training.md#collinear-targets)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a config.json we do not model (kept and written back)."""

    def __init__(self, **kwargs: Any):
        known = {f.name: f for f in dataclasses.fields(self)}
        extra = dict(kwargs.pop("extra", None) or {})
        for name, f in known.items():
            if name == "extra":
                continue
            if name in kwargs:
                value = kwargs.pop(name)
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                value = f.default_factory()  # type: ignore[misc]
            else:
                value = f.default
            setattr(self, name, value)
        kwargs.pop("model_type", None)
        kwargs.pop("num_feat_extract_layers", None)  # derived from conv_dim
        num_labels = kwargs.pop("num_labels", None)
        label2id = kwargs.pop("label2id", None)
        extra.update(kwargs)
        self.extra = extra
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        elif label2id:
            self.id2label = {int(v): str(k) for k, v in label2id.items()}
        elif num_labels is not None:
            self.id2label = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        self.validate()

    # -- derived ----------------------------------------------------------------------------------------
    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in (self.id2label or {0: "LABEL_0", 1: "LABEL_1"}).items()}

    @property
    def inputs_to_logits_ratio(self) -> int:
        return math.prod(self.conv_stride)

    @property
    def pads_safely(self) -> bool:
        """Whether padded input under its attention mask gives each row the features it gets alone: True for a
        layer-norm feature encoder; a group-norm one (wav2vec2-base style) normalises its first conv layer over
        the whole input, padding included, so inference must never pad it (transformers' feature extractors give
        such models no attention mask for the same reason)."""
        return self.feat_extract_norm == "layer"

    @property
    def receptive_field(self) -> int:
        """Samples the conv stack needs for one output frame (400 with the default kernels/strides)."""
        rf = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            rf = (rf - 1) * s + k
        return rf

    def validate(self) -> None:
        n = len(self.conv_dim)
        if len(self.conv_stride) != n or len(self.conv_kernel) != n:
            raise ValueError(
                f"conv_dim, conv_stride and conv_kernel must have the same length, got {n}, "
                f"{len(self.conv_stride)}, {len(self.conv_kernel)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError(
                f"codevector_dim ({self.codevector_dim}) must be divisible by num_codevector_groups "
                f"({self.num_codevector_groups})"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.codevector_init not in ("uniform", "normal"):
            raise ValueError(f"codevector_init must be 'uniform' or 'normal', got {self.codevector_init!r}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if not 0.0 <= self.replace_prob <= 1.0:
            raise ValueError(f"replace_prob must be in [0, 1], got {self.replace_prob}")
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}")

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "id2label"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["model_type"] = self.model_type
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        if self.id2label is not None:
            out["id2label"] = {str(k): v for k, v in self.id2label.items()}
            out["label2id"] = self.label2id
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, convertible: bool = False, **overrides: Any) -> UniSpeechConfig:
        """``convertible``: also read CONVERTIBLE_MODEL_TYPES (a continued pretraining from a wav2vec2 checkpoint);
        everything else expects a UniSpeech config and refuses another model type by name."""
        model_type = d.get("model_type", cls.model_type)
        if model_type != cls.model_type and not (convertible and model_type in CONVERTIBLE_MODEL_TYPES):
            raise ValueError(f"config has model_type {model_type!r}, expected {cls.model_type!r}")
        return cls(**{**d, **overrides})

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, convertible: bool = False, **overrides: Any) -> UniSpeechConfig:
        path = Path(directory)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} at {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, convertible=convertible, **overrides)
