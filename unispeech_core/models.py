"""UniSpeechModel and its heads. Attribute names are the checkpoint keys of transformers' UniSpeech classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PreTrainedMixin
from .config import UniSpeechConfig
from .encoder import Encoder, PositionalConvEmbedding
from .feature_encoder import FeatureEncoder, FeatureProjection, conv_output_lengths, frame_mask
from .losses import contrastive_candidates, contrastive_sum, ctc_loss, diversity_loss, unispeech_loss
from .masking import compute_mask_indices, sample_negative_indices
from .outputs import BaseModelOutput, CTCOutput, PreTrainingOutput, SequenceClassifierOutput
from .quantizer import GumbelVectorQuantizer, QuantizerOutput
from .telemetry import code_perplexity, code_randomness, contrastive_accuracy, target_cosines


def _check_input(input_values: torch.Tensor, attention_mask: torch.Tensor | None, config: UniSpeechConfig) -> None:
    if not isinstance(input_values, torch.Tensor):
        raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
    if input_values.ndim != 2:
        raise ValueError(
            f"input_values must be [batch, samples] mono audio, got shape {tuple(input_values.shape)}"
        )
    if not torch.is_floating_point(input_values):
        raise TypeError(f"input_values must be floating point (normalised audio), got {input_values.dtype}")
    lengths = attention_mask.sum(-1) if attention_mask is not None else None
    shortest = int(lengths.min()) if lengths is not None else input_values.shape[1]
    if shortest < config.receptive_field:
        raise ValueError(
            f"audio of {shortest} samples is shorter than the feature encoder's receptive field "
            f"({config.receptive_field} samples = {config.receptive_field / 16:.0f} ms at 16 kHz)"
        )
    if attention_mask is not None and attention_mask.shape != input_values.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_values shape {tuple(input_values.shape)}"
        )


class UniSpeechPreTrainedModel(PreTrainedMixin, nn.Module):
    """Weight init as transformers does it, so freshly built models train the same way."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__()
        self.config = config

    def post_init(self) -> None:
        self.apply(self._init_weights)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, GumbelVectorQuantizer):
            module.weight_proj.weight.normal_(0.0, 1.0)
            module.weight_proj.bias.zero_()
            if self.config.codevector_init == "normal":
                module.codevectors.normal_(0.0, math.sqrt(1 / 3))  # E[x²] of U(0,1), centred
            else:
                module.codevectors.uniform_()
        elif isinstance(module, PositionalConvEmbedding):
            conv = module.conv
            w = torch.empty_like(conv.weight).normal_(0, 2 * math.sqrt(1 / (conv.kernel_size[0] * conv.in_channels)))
            conv.parametrizations.weight.original1.copy_(w)
            conv.parametrizations.weight.original0.copy_(torch.linalg.vector_norm(w, dim=(0, 1), keepdim=True))
            conv.bias.zero_()
        elif isinstance(module, FeatureProjection):
            k = math.sqrt(1 / module.projection.in_features)
            module.projection.weight.uniform_(-k, k)
            module.projection.bias.uniform_(-k, k)
        elif isinstance(module, nn.Linear):
            if not getattr(module, "_initialised_by_parent", False):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, nn.Conv1d) and not hasattr(module, "parametrizations"):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                k = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                module.bias.uniform_(-k, k)

    def _get_feat_extract_output_lengths(self, lengths: torch.Tensor | int) -> torch.Tensor | int:
        return conv_output_lengths(lengths, self.config)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each conv/transformer layer in backward: activation memory for compute."""
        for m in self.modules():
            if isinstance(m, (FeatureEncoder, Encoder)):
                m.gradient_checkpointing = True

    def freeze_feature_encoder(self) -> None:
        """Stop training the conv feature encoder (standard for fine-tuning)."""
        base = self if isinstance(self, UniSpeechModel) else self.unispeech
        base.feature_extractor._freeze_parameters()

    def freeze_base_model(self) -> None:
        """Train only the head on top of ``unispeech``."""
        for p in self.unispeech.parameters():
            p.requires_grad = False

    def set_layerdrop_generator(self, generator: torch.Generator | None) -> None:
        """Draw LayerDrop decisions from ``generator`` (seed it identically on every rank)."""
        for m in self.modules():
            if isinstance(m, Encoder):
                m.layerdrop_generator = generator


class UniSpeechModel(UniSpeechPreTrainedModel):
    def __init__(self, config: UniSpeechConfig):
        super().__init__(config)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        self.encoder = Encoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self and hasattr(self, "masked_spec_embed"):
            with torch.no_grad():
                self.masked_spec_embed.uniform_()

    def sample_mask_time_indices(
        self, frames: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Time masks for a batch whose valid frame counts are ``frames`` [B] (e.g. for a fixed-seed dev loss)."""
        c = self.config
        return compute_mask_indices(
            (frames.shape[0], int(frames.max())), c.mask_time_prob, c.mask_time_length, frames,
            c.mask_time_min_masks, device=frames.device, generator=generator,
        )

    def _mask_hidden_states(
        self, x: torch.Tensor, mask_time_indices: torch.Tensor | None, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.config
        if not c.apply_spec_augment:
            return x, None
        if mask_time_indices is None and c.mask_time_prob > 0 and self.training:
            mask_time_indices = compute_mask_indices(
                x.shape[:2], c.mask_time_prob, c.mask_time_length, valid.sum(-1), c.mask_time_min_masks,
                device=x.device,
            )
        if mask_time_indices is not None:
            if mask_time_indices.shape != x.shape[:2]:
                raise ValueError(
                    f"mask_time_indices shape {tuple(mask_time_indices.shape)} != frames {tuple(x.shape[:2])}"
                )
            mask_time_indices = mask_time_indices.to(torch.bool)
            x = torch.where(mask_time_indices[..., None], self.masked_spec_embed.to(x.dtype), x)
        if c.mask_feature_prob > 0 and self.training:
            feat = compute_mask_indices(
                (x.shape[0], x.shape[2]), c.mask_feature_prob, c.mask_feature_length, None,
                c.mask_feature_min_masks, device=x.device,
            )
            x = x.masked_fill(feat[:, None, :], 0.0)
        return x, mask_time_indices

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutput:
        _check_input(input_values, attention_mask, self.config)
        feats = self.feature_extractor(input_values).transpose(1, 2)
        if attention_mask is not None:
            valid = frame_mask(attention_mask, feats.shape[1], self.config)
        else:
            valid = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        hidden, extract_features = self.feature_projection(feats)
        hidden, mask_time_indices = self._mask_hidden_states(hidden, mask_time_indices, valid)
        encoder_input = hidden
        hidden, all_hidden, attns = self.encoder(
            hidden, valid if attention_mask is not None else None, output_hidden_states, output_attentions
        )
        return BaseModelOutput(hidden, extract_features, all_hidden, attns, valid, mask_time_indices, encoder_input)


class UniSpeechForPreTraining(UniSpeechPreTrainedModel):
    """Multitask pretraining: contrastive + diversity on masked frames, phonetic CTC on labeled utterances."""

    def __init__(self, config: UniSpeechConfig):
        super().__init__(config)
        self.unispeech = UniSpeechModel(config)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        self.project_hid = nn.Linear(config.proj_codevector_dim, config.hidden_size)
        self.ctc_proj = nn.Linear(config.hidden_size, config.num_ctc_classes)
        self.dropout = nn.Dropout(config.final_dropout)
        self.post_init()

    def set_gumbel_temperature(self, temperature: float) -> None:
        self.quantizer.temperature = temperature

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labeled: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> PreTrainingOutput:
        """The loss needs masked frames: sampled here in training, or passed in (e.g. for a dev loss)."""
        c = self.config
        out = self.unispeech(input_values, attention_mask, mask_time_indices, output_hidden_states, output_attentions)
        states, valid, mask = out.last_hidden_state, out.frame_mask, out.mask_time_indices
        if mask is not None:
            mask = mask & valid
        quant_in = self.dropout_features(out.extract_features)
        ppl_frames = mask if mask is not None and bool(mask.any()) else valid
        codes = QuantizerOutput(*self.quantizer(quant_in, ppl_frames, with_codes=True))
        perplexity = codes.perplexity
        quantized = self.project_hid(self.project_q(codes.vectors.to(self.project_q.weight.dtype)))

        z = states
        if self.training and c.replace_prob > 0:
            replace = torch.rand(states.shape[:2], device=states.device) < c.replace_prob
            z = torch.where(replace[..., None], quantized, states)
        ctc_logits = self.ctc_proj(self.dropout(z))

        result = PreTrainingOutput(
            projected_states=states, projected_quantized_states=quantized, codevector_perplexity=perplexity,
            ctc_logits=ctc_logits, mask_time_indices=mask, hidden_states=out.hidden_states,
            attentions=out.attentions, encoder_input=out.encoder_input,
        )
        if mask is None or not bool(mask.any()):
            return result
        num_masked = mask.sum()
        if sampled_negative_indices is None:
            sampled_negative_indices = sample_negative_indices(mask, c.num_negatives)
        candidates = contrastive_candidates(states, quantized, mask, sampled_negative_indices,
                                            c.contrastive_logits_temperature)
        con = contrastive_sum(candidates)
        div = diversity_loss(perplexity, c.num_codevector_groups, c.num_codevectors_per_group)
        result.telemetry = pretraining_telemetry(candidates, codes, num_masked, states.shape[0], c)
        ctc_sum = None
        if labels is not None and c.ctc_weight > 0:
            ctc_sum = self._ctc_sum(ctc_logits, valid.sum(-1), labels, labeled)
        total, parts = unispeech_loss(
            ctc_sum, con, div, num_masked, ctc_weight=c.ctc_weight, diversity_weight=c.diversity_loss_weight
        )
        result.loss = total
        result.contrastive_loss, result.diversity_loss = parts["contrastive_loss"], parts["diversity_loss"]
        result.ctc_loss = parts["ctc_loss"] if ctc_sum is not None else None
        result.num_masked = num_masked
        return result

    def _ctc_sum(
        self, logits: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor, labeled: torch.Tensor | None
    ) -> torch.Tensor:
        """Summed CTC over labeled rows only (rows flagged unlabeled or all −100 contribute nothing)."""
        has_labels = (labels >= 0).any(-1)
        rows = has_labels if labeled is None else has_labels & labeled.to(torch.bool)
        if labels.numel() and int(labels.max()) >= self.config.num_ctc_classes:
            raise ValueError(f"label ids must be < num_ctc_classes ({self.config.num_ctc_classes})")
        if not bool(rows.any()):
            return logits.sum() * 0.0  # keeps the graph (and DeepSpeed's grad hooks) intact
        return ctc_loss(
            logits[rows], frames[rows], labels[rows], blank=self.config.pad_token_id, reduction="sum",
            zero_infinity=self.config.ctc_zero_infinity,
        )


class UniSpeechForCTC(UniSpeechPreTrainedModel):
    def __init__(self, config: UniSpeechConfig):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError("UniSpeechForCTC needs config.vocab_size (the size of the phone vocabulary)")
        self.unispeech = UniSpeechModel(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> CTCOutput:
        if labels is not None and labels.numel() and int(labels.max()) >= self.config.vocab_size:
            raise ValueError(f"label ids must be < vocab_size ({self.config.vocab_size}), got {int(labels.max())}")
        out = self.unispeech(input_values, attention_mask, None, output_hidden_states, output_attentions)
        logits = self.lm_head(self.dropout(out.last_hidden_state))
        frames = out.frame_mask.sum(-1)
        loss = None
        if labels is not None:
            c = self.config
            loss = ctc_loss(
                logits, frames, labels, blank=c.pad_token_id, reduction=c.ctc_loss_reduction,
                zero_infinity=c.ctc_zero_infinity,
            )
        return CTCOutput(loss, logits, frames, out.hidden_states, out.attentions)


class UniSpeechForSequenceClassification(UniSpeechPreTrainedModel):
    def __init__(self, config: UniSpeechConfig):
        super().__init__(config)
        self.unispeech = UniSpeechModel(config)
        if config.use_weighted_layer_sum:
            n = config.num_hidden_layers + 1
            self.layer_weights = nn.Parameter(torch.ones(n) / n)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self and hasattr(self, "layer_weights"):
            with torch.no_grad():
                self.layer_weights.fill_(1.0 / self.layer_weights.numel())

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> SequenceClassifierOutput:
        weighted = self.config.use_weighted_layer_sum
        out = self.unispeech(input_values, attention_mask, None, weighted or output_hidden_states, output_attentions)
        if weighted:
            stacked = torch.stack(out.hidden_states, dim=1)
            weights = F.softmax(self.layer_weights, dim=-1)
            hidden = (stacked * weights.view(-1, 1, 1)).sum(dim=1)
        else:
            hidden = out.last_hidden_state
        hidden = self.projector(hidden)
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            valid = out.frame_mask
            pooled = hidden.masked_fill(~valid[..., None], 0.0).sum(1) / valid.sum(1, keepdim=True)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss, logits, out.hidden_states if output_hidden_states else None, out.attentions)


@torch.no_grad()
def pretraining_telemetry(candidates, codes, num_masked: torch.Tensor, rows: int,
                          config: UniSpeechConfig) -> dict[str, torch.Tensor]:
    """The health statistics of one forward pass (unispeech_core/telemetry.py says what each one shows)."""
    pos_neg, pos_pred = target_cosines(candidates.predicted, candidates.positives, candidates.negatives)
    return {
        "code_perplexity": code_perplexity(codes.argmax_codes, config.num_codevectors_per_group),
        "prob_perplexity": codes.perplexity.detach().float(),
        "code_randomness": code_randomness(codes.sampled_codes, codes.argmax_codes),
        "contrastive_accuracy": contrastive_accuracy(candidates.logits),
        "cos_pos_neg": pos_neg,
        "cos_pos_pred": pos_pred,
        "masked_frames_per_utt": num_masked.float() / max(rows, 1),
    }
