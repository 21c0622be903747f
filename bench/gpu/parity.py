"""The hardware row (what precision=auto makes of the GPU) and fp32 parity of the BASE model on GPU vs CPU."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from .plan import BASE_CONFIG, REPO
from .table import Row

PARITY_TOL = 1e-3


def hardware_row() -> tuple[Row, Any]:
    from unispeech_platform.runtime.hardware import detect_hardware, resolve_precision

    facts = detect_hardware()
    if not facts.cuda_capabilities:
        return Row("hardware", facts.describe(), "no CUDA device", False), facts
    choice = resolve_precision("auto", use_gpu=True, facts=facts)
    want = "bf16" if min(facts.cuda_capabilities) >= (8, 0) else "fp16"
    return Row("hardware", facts.describe(), f"precision auto -> {choice.precision}", choice.precision == want), facts


def base_model_config(vocab: Path | None = None) -> dict[str, Any]:
    import yaml

    model = dict(yaml.safe_load((REPO / BASE_CONFIG).read_text())["model"])
    if vocab is not None and vocab.is_file():
        from unispeech_core import PhoneTokenizer

        model["num_ctc_classes"] = len(PhoneTokenizer.from_file(str(vocab)))
    return model


def relative_error(got: Any, ref: Any) -> float:
    """Max abs difference relative to the reference's max magnitude."""
    err = (got.float() - ref.float()).abs().max().item()
    return err / max(ref.float().abs().max().item(), 1e-6)


def parity_rows() -> list[Row]:
    """Same weights and inputs (masks, negatives, labels) on CPU and GPU, fp32 with TF32 off, eval mode."""
    import torch

    from unispeech_core import UniSpeechConfig, UniSpeechForCTC, UniSpeechForPreTraining
    from unispeech_core.masking import sample_negative_indices

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = UniSpeechConfig(**base_model_config(), vocab_size=32)
    g = torch.Generator().manual_seed(0)
    lengths = (64000, 48000)
    x = torch.zeros(len(lengths), max(lengths))
    am = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, generator=g)
        am[i, :n] = 1

    def compare(name: str, model: torch.nn.Module, kwargs: dict[str, torch.Tensor], keys: tuple[str, ...]) -> Row:
        model.eval()
        outs = []
        for device, m in (("cpu", model), ("cuda", copy.deepcopy(model).to("cuda"))):
            with torch.no_grad():
                out = m(x.to(device), am.to(device), **{k: v.to(device) for k, v in kwargs.items()})
            outs.append({k: getattr(out, k).detach().float().cpu() for k in keys})
        errs = {k: relative_error(outs[1][k], outs[0][k]) for k in keys}
        ok = all(math.isfinite(e) and e < PARITY_TOL for e in errs.values())
        value = ", ".join(f"{k} {e:.1e}" for k, e in errs.items())
        return Row(f"parity {name}", f"GPU vs CPU fp32 (tol {PARITY_TOL:g} rel)", value, ok)

    torch.manual_seed(0)
    pre = UniSpeechForPreTraining(cfg)
    frames = pre._get_feat_extract_output_lengths(torch.tensor(lengths))
    mask = pre.unispeech.sample_mask_time_indices(frames, g)
    negatives = sample_negative_indices(mask, cfg.num_negatives, generator=g)
    labels = torch.randint(1, cfg.num_ctc_classes, (2, 30), generator=g)
    labels[1, 20:] = -100
    rows = [compare("pretraining", pre, dict(labels=labels, mask_time_indices=mask,
                                              sampled_negative_indices=negatives),
                    ("projected_states", "ctc_logits", "loss"))]
    torch.manual_seed(0)
    ctc_labels = torch.randint(1, cfg.vocab_size, (2, 30), generator=g)
    ctc_labels[1, 20:] = -100
    rows.append(compare("ctc", UniSpeechForCTC(cfg), dict(labels=ctc_labels), ("logits", "loss")))
    return rows
