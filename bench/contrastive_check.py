"""Does contrastive-only pretraining of a preset's model leave chance on a corpus? One process, one thread, no Ray.

The self-supervised arm of jobs.crosslingual sits at chance (ln(K+1) for K negatives) for its first few hundred
updates; this shows how the contrastive loss moves with a masking setting in a few minutes, e.g.

    .venv/bin/python bench/contrastive_check.py --corpus data/quickstart/high --steps 1200 \
        --set mask_time_prob=0.5 --set mask_time_length=10 --lr 5e-4
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import torch
import yaml

from unispeech_core import UniSpeechConfig, UniSpeechForPreTraining
from unispeech_core.features import pad_batch
from unispeech_core.quantizer import gumbel_temperature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="data/quickstart/high", help="corpus root (lang=/split=train parts are read)")
    ap.add_argument("--preset", default="configs/tiny.yaml", help="job config whose model: section is used")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model field override (YAML value)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--every", type=int, default=50, help="print the mean of the last N updates")
    args = ap.parse_args()
    torch.set_num_threads(1)
    waves = [sf.read(io.BytesIO(a), dtype="float32")[0]
             for f in sorted(Path(args.corpus).glob("lang=*/split=train/*.parquet"))
             for a in pq.read_table(f, columns=["audio"]).column("audio").to_pylist()]
    cfg = yaml.safe_load(Path(args.preset).read_text())["model"]
    cfg.update(ctc_weight=0.0, diversity_loss_weight=1.0)
    for item in args.set:
        k, v = item.split("=", 1)
        cfg[k] = yaml.safe_load(v)
    torch.manual_seed(0)
    model = UniSpeechForPreTraining(UniSpeechConfig(**cfg)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * max(0.0, 1 - s / args.steps))
    rng, hist, t0 = np.random.default_rng(0), [], time.perf_counter()
    c = model.config
    print(f"{len(waves)} utterances; chance = ln({c.num_negatives + 1}) = {np.log(c.num_negatives + 1):.3f}")
    print("update  contrastive  accuracy  cos(pos,neg)  code_ppl  soft_ppl  masked/utt  seconds")
    for step in range(args.steps):
        batch = pad_batch([waves[i] for i in rng.choice(len(waves), args.batch, replace=False)])
        model.set_gumbel_temperature(gumbel_temperature(
            step, c.max_gumbel_temperature, c.min_gumbel_temperature, c.gumbel_temperature_decay))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch["input_values"], batch["attention_mask"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step(), sched.step(), opt.zero_grad()
        t = out.telemetry  # unispeech_core/telemetry.py: is the contrastive term learning, and if not, why
        hist.append((out.contrastive_loss.item(), t["contrastive_accuracy"].item(), t["cos_pos_neg"].item(),
                     t["code_perplexity"].item(), t["prob_perplexity"].item(), t["masked_frames_per_utt"].item()))
        if (step + 1) % args.every == 0:
            h = np.array(hist[-args.every:]).mean(0)
            print(f"{step + 1:6d}  {h[0]:11.3f}  {h[1]:8.2f}  {h[2]:12.3f}  {h[3]:8.1f}  {h[4]:8.1f}  {h[5]:10.1f}  "
                  f"{time.perf_counter() - t0:7.0f}")


if __name__ == "__main__":
    main()
