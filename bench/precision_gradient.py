"""Does CPU bf16 autocast keep the contrastive term's gradient? fp32 vs bf16 on one batch, same mask and negatives.

The contrastive loss leaves chance later under bf16 than in fp32 on the cross-lingual presets
(docs/training.md#precision-devices-and-threads-decided-by-the-hardware); this tells a broken step (gradient
cosine well below 1) from a trajectory that merely drifts apart. Eval mode (argmax codes, no dropout), so the
two passes differ only in precision:

    .venv/bin/python bench/precision_gradient.py --corpus data/crosslingual-labeled/high             # at init
    .venv/bin/python bench/precision_gradient.py --corpus data/crosslingual-labeled/high \\
        --model runs/experiments/crosslingual-cpu/unispeech-s0-pretrain/model                          # an export
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml

from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining
from unispeech_core.features import pad_batch
from unispeech_core.losses import contrastive_candidates
from unispeech_core.masking import sample_negative_indices
from unispeech_platform.runtime.hardware import machine_line


def load_batch(corpus: str, size: int) -> dict[str, torch.Tensor]:
    """``size`` utterances drawn (seed 0) from the first 40 train rows of each of the corpus's first three parts."""
    waves = [sf.read(io.BytesIO(a), dtype="float32")[0]
             for f in sorted(Path(corpus).glob("lang=*/split=train/*.parquet"))[:3]
             for a in pq.read_table(f, columns=["audio"]).column("audio").to_pylist()[:40]]
    picks = np.random.default_rng(0).choice(len(waves), size, replace=False)
    return pad_batch([waves[i] for i in picks])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="corpus root (lang=*/split=train parts)")
    ap.add_argument("--model", help="a pretraining export directory; default: a fresh model from --preset")
    ap.add_argument("--preset", default="configs/tiny.yaml", help="job config whose model: section builds a fresh model")
    ap.add_argument("--mask-prob", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    over = {"mask_time_prob": args.mask_prob, "ctc_weight": 0.0, "diversity_loss_weight": 0.0}
    if args.model:
        model = UniSpeechForPreTraining.from_pretrained(args.model, **over)
    else:
        cfg = {**yaml.safe_load(Path(args.preset).read_text())["model"], **over}
        torch.manual_seed(0)
        model = UniSpeechForPreTraining(UniSpeechConfig(**cfg))
    model.eval()
    batch = load_batch(args.corpus, args.batch)
    x, am = batch["input_values"], batch["attention_mask"]
    frames = model._get_feat_extract_output_lengths(am.sum(-1))
    mask = model.unispeech.sample_mask_time_indices(frames, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    neg = sample_negative_indices(mask, model.config.num_negatives)

    def forward(bf16: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(contrastive loss, its gradient over every parameter, the logits), one precision."""
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, am, mask_time_indices=mask, sampled_negative_indices=neg)
        out.contrastive_loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        logits = contrastive_candidates(out.projected_states.detach(), out.projected_quantized_states.detach(),
                                        out.mask_time_indices, neg, model.config.contrastive_logits_temperature).logits
        return out.contrastive_loss.item(), grad, logits.float()

    loss32, g32, l32 = forward(False)
    loss16, g16, l16 = forward(True)
    finite = torch.isfinite(l32) & torch.isfinite(l16)
    margin = (l32[:, :1] - l32[:, 1:])[torch.isfinite(l32[:, 1:])].abs().mean()
    print(f"{machine_line()}; model {args.model or 'fresh (' + args.preset + ')'}; "
          f"{args.batch} utterances, {int(mask.sum())} masked frames, {model.config.num_negatives} negatives\n")
    print("| contrastive fp32 | bf16 | mean pos-neg logit margin (fp32) | mean abs logit error (bf16) | "
          "gradient cosine bf16 vs fp32 | gradient norm ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {loss32:.4f} | {loss16:.4f} | {margin:.4f} | {(l16 - l32)[finite].abs().mean():.4f} | "
          f"{F.cosine_similarity(g32, g16, dim=0):.4f} | {g16.norm() / g32.norm():.3f} |")


if __name__ == "__main__":
    main()
