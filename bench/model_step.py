"""Forward+backward speed of unispeech_core vs transformers, same config and batch, interleaved in one run.

    python bench/model_step.py [--repeats 5] [--batch 8] [--seconds 4] [--threads N] [--precision fp32|bf16]

Prints a Markdown table of audio-seconds processed per wall-clock second (median over repeats) for the CTC
head and for pretraining (ours computes the full UniSpeech loss; transformers computes no loss at all, so its
pretraining step backpropagates the summed projected states instead). Each repeat runs every contestant once
in turn, so machine noise hits both alike. Results and the command live in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers

import unispeech_core as uc

CONFIG = dict(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, conv_dim=(256,) * 7,
    num_ctc_classes=48, vocab_size=48, layerdrop=0.0, mask_time_prob=0.065, mask_time_length=10,
    num_negatives=100,
)


def make_batch(batch: int, seconds: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    samples = int(seconds * 16_000)
    labels = torch.randint(4, CONFIG["vocab_size"], (batch, int(seconds * 12)), generator=g)  # ~12 phones/s
    return {
        "input_values": torch.randn(batch, samples, generator=g),
        "attention_mask": torch.ones(batch, samples, dtype=torch.long),
        "labels": labels,
    }


def steps(batch: dict[str, torch.Tensor], bf16: bool) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    ours_ctc = uc.UniSpeechForCTC(uc.UniSpeechConfig(**CONFIG)).train()
    theirs_ctc = transformers.UniSpeechForCTC(transformers.UniSpeechConfig(**CONFIG)).train()
    ours_pre = uc.UniSpeechForPreTraining(uc.UniSpeechConfig(**CONFIG)).train()
    theirs_pre = transformers.UniSpeechForPreTraining(transformers.UniSpeechConfig(**CONFIG)).train()
    x, am, labels = batch["input_values"], batch["attention_mask"], batch["labels"]

    def run(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn()
            loss.backward()
        return step

    return {
        "ctc/ours": run(ours_ctc, lambda: ours_ctc(x, am, labels=labels).loss),
        "ctc/transformers": run(theirs_ctc, lambda: theirs_ctc(x, attention_mask=am, labels=labels).loss),
        "pretrain/ours (full loss)": run(ours_pre, lambda: ours_pre(x, am, labels=labels).loss),
        "pretrain/transformers (no loss)": run(
            theirs_pre,
            lambda: (lambda o: o.projected_states.sum() + o.projected_quantized_states.sum())(
                theirs_pre(x, attention_mask=am)
            ),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = CPU autocast for both")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = make_batch(args.batch, args.seconds)
    contestants = steps(batch, args.precision == "bf16")
    for step in contestants.values():  # warm-up: allocator, oneDNN primitive caches
        step()
    times: dict[str, list[float]] = {k: [] for k in contestants}
    cpu: dict[str, list[float]] = {k: [] for k in contestants}
    for _ in range(args.repeats):
        for name, step in contestants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    audio = args.batch * args.seconds
    speed = {k: audio / statistics.median(v) for k, v in times.items()}
    print(f"{args.precision}, batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.repeats} interleaved repeats (median)\n")
    # CPU-seconds per step is the steadier figure on a shared machine: waiting for a core costs no CPU time
    print("| step | implementation | s/step | audio-s/s | ours / transformers | CPU-s/step | ratio by CPU time |")
    print("|---|---|---|---|---|---|---|")
    for task in ("ctc", "pretrain"):
        names = [k for k in speed if k.startswith(task)]
        ref, ref_cpu = speed[names[1]], statistics.median(cpu[names[1]])
        for k in names:
            impl, c = k.split("/", 1)[1], statistics.median(cpu[k])
            print(f"| {task} | {impl} | {statistics.median(times[k]):.2f} | {speed[k]:.1f} | {speed[k] / ref:.2f}x "
                  f"| {c:.2f} | {ref_cpu / c:.2f}x |")


if __name__ == "__main__":
    main()
