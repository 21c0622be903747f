"""Forward+backward speed of unispeech_core vs transformers, same config and batch, interleaved in one run.

    python bench/model_step.py [--repeats 5] [--batch 8] [--seconds 4] [--threads N] [--precision fp32,auto]

Prints a Markdown table of audio-seconds processed per wall-clock second (median over repeats) for the CTC
head and for pretraining (ours computes the full UniSpeech loss; transformers computes no loss at all, so its
pretraining step backpropagates the summed projected states instead), for each precision asked for: fp32, and
what train.precision=auto picks on this CPU (printed with the reason; bf16 autocast only where the CPU has native
bf16). Each repeat runs every contestant once in turn, so machine noise hits all alike. Results and the command
live in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/model_step.py` from the repo root
import unispeech_core as uc  # noqa: E402
from unispeech_platform.runtime.hardware import detect_hardware, resolve_precision  # noqa: E402

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


def steps(batch: dict[str, torch.Tensor], precision: str) -> dict[str, Callable[[], None]]:
    bf16 = precision == "bf16"
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
        f"ctc/{precision}/ours": run(ours_ctc, lambda: ours_ctc(x, am, labels=labels).loss),
        f"ctc/{precision}/transformers": run(theirs_ctc, lambda: theirs_ctc(x, attention_mask=am, labels=labels).loss),
        f"pretrain/{precision}/ours (full loss)": run(ours_pre, lambda: ours_pre(x, am, labels=labels).loss),
        f"pretrain/{precision}/transformers (no loss)": run(
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
    ap.add_argument("--precision", default="fp32,auto",
                    help="comma-separated train.precision values to measure side by side (fp32, bf16, auto); "
                         "bf16 = CPU autocast for both implementations")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    facts = detect_hardware(probe_cuda=False)
    precisions: list[str] = []
    for requested in args.precision.split(","):
        choice = resolve_precision(requested.strip(), use_gpu=False, facts=facts)
        print(f"precision {requested.strip()} -> {choice.precision}: {choice.reason}")
        if choice.precision not in precisions:
            precisions.append(choice.precision)
    batch = make_batch(args.batch, args.seconds)
    contestants = {k: v for p in precisions for k, v in steps(batch, p).items()}
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
    print(f"\n{facts.describe()}; batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.repeats} interleaved repeats (median)\n")
    # CPU-seconds per step is the steadier figure on a shared machine: waiting for a core costs no CPU time
    print("| step | precision | implementation | s/step | audio-s/s | ours / transformers | vs fp32 | CPU-s/step "
          "| ratio by CPU time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in ("ctc", "pretrain"):
        for p in precisions:
            names = [k for k in speed if k.startswith(f"{task}/{p}/")]
            ref, ref_cpu = speed[names[1]], statistics.median(cpu[names[1]])
            for k in names:
                impl, c = k.split("/", 2)[2], statistics.median(cpu[k])
                fp32 = speed.get(k.replace(f"/{p}/", "/fp32/"))
                vs = f"{speed[k] / fp32:.2f}x" if fp32 else "-"
                print(f"| {task} | {p} | {impl} | {statistics.median(times[k]):.2f} | {speed[k]:.1f} | "
                      f"{speed[k] / ref:.2f}x | {vs} | {c:.2f} | {ref_cpu / c:.2f}x |")


if __name__ == "__main__":
    main()
