"""Does CPU bf16 autocast keep the contrastive term's gradient? fp32 vs bf16 on one batch, same mask and negatives;
and which part of the model, kept in fp32 under bf16 autocast, brings it back, at what step time.

Across CPUs the contrastive loss left chance later under bf16 than in fp32 on the cross-lingual presets, on one CPU
not (docs/training.md#precision-devices-and-threads-decided-by-the-hardware); this tells a broken step (gradient
cosine well below 1) from a trajectory that merely drifts apart. Eval mode (argmax codes, no dropout), so the
two passes differ only in precision. The second table keeps one part at a time in fp32 inside the bf16 autocast
(the part's forward runs with autocast off on fp32 inputs) and times a pretraining step (train mode, full loss,
``--threads`` torch threads as one worker has; median of ``--repeats``, each repeat running every row in turn):

    .venv/bin/python bench/precision_gradient.py --corpus data/crosslingual-labeled/high             # at init
    .venv/bin/python bench/precision_gradient.py --corpus data/crosslingual-labeled/high \\
        --model runs/experiments/crosslingual-cpu/unispeech-s0-pretrain/model                          # an export
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
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


def _in_fp32(inner):
    """``inner`` (a module's forward) with autocast off and its floating inputs in fp32."""

    def forward(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return inner(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args), **kwargs)

    return forward


@contextmanager
def fp32_inside_autocast(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Run each module's forward in fp32 (see _in_fp32) for the duration; their class forward afterwards."""
    with ExitStack() as restore:
        for module in modules:
            module.forward = _in_fp32(module.forward)
            restore.callback(delattr, module, "forward")
        yield


def fp32_parts(model: UniSpeechForPreTraining) -> dict[str, list[torch.nn.Module]]:
    """The parts the second table keeps in fp32, by the name it prints."""
    convs = list(model.unispeech.feature_extractor.conv_layers)
    return {
        "nothing (all bf16)": [],
        "conv feature encoder": [model.unispeech.feature_extractor],
        f"conv layers 1-{len(convs) - 1} (not the first)": convs[1:],
        "conv layer 0 (on the waveform)": convs[:1],
        "transformer encoder": [model.unispeech.encoder],
        "target path (quantizer, project_q, project_hid)": [model.quantizer, model.project_q, model.project_hid],
    }


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
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the step times (a worker's: 1 per CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed pretraining steps per row (median)")
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

    def forward(bf16: bool, keep: Sequence[torch.nn.Module] = ()) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(contrastive loss, its gradient over every parameter, the logits), one precision; ``keep`` in fp32."""
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), fp32_inside_autocast(keep):
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

    parts = fp32_parts(model)
    grads = {name: forward(True, keep)[1] if keep else g16 for name, keep in parts.items()}  # nothing kept: g16
    torch.set_num_threads(args.threads)
    model.train()  # full loss, Gumbel samples: the step a worker runs
    train_parts = {"fp32 (no autocast)": None, **parts}
    times: dict[str, list[float]] = {name: [] for name in train_parts}

    def step(name: str) -> float:
        keep = train_parts[name]
        autocast = nullcontext() if keep is None else torch.autocast("cpu", dtype=torch.bfloat16)
        start = time.perf_counter()
        with autocast, fp32_inside_autocast(keep or []):
            loss = model(x, am).loss
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - start

    for name in train_parts:  # warm-up
        step(name)
    for _ in range(args.repeats):
        for name in train_parts:
            times[name].append(step(name))
    base = statistics.median(times["fp32 (no autocast)"])
    print(f"\nbf16 autocast with one part kept in fp32; step times: train mode, full loss, {args.threads} thread(s), "
          f"median of {args.repeats}\n")
    print("| kept in fp32 | gradient cosine vs fp32 | gradient norm ratio | pretraining step (s) | vs fp32 step |")
    print("|---|---|---|---|---|")
    print(f"| everything (fp32, no autocast) | 1 | 1 | {base:.3f} | 1.00 |")
    for name, g in grads.items():
        t = statistics.median(times[name])
        print(f"| {name} | {F.cosine_similarity(g32, g, dim=0):.4f} | {g.norm() / g32.norm():.3f} | {t:.3f} | "
              f"{t / base:.2f} |")


if __name__ == "__main__":
    main()
