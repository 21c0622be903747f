"""The job against the bare model step, and where the job's seconds go (docs/performance.md#where-a-step-goes).

    .venv/bin/python bench/train_throughput.py [--corpus DIR] [--steps 60] [--precisions fp32,auto]
    .venv/bin/python bench/train_throughput.py --zero-memory      # per-rank state memory for ZeRO 0/1/2/3

One table, one row per setting and precision: the demo's pretraining settings (configs/tiny.yaml + the
pretrain overrides of configs/quickstart.yaml) and the tiny preset's own, each
- **bare**: UniSpeechForPreTraining's forward + backward + AdamW step on the same batches (the job's data
  config, read in this process before timing), the same precision (autocast bf16 or fp32) and the threads one
  worker gets, times the number of workers (each worker has its own cores);
- **job**: the real `run_training` (local Ray, DeepSpeed, MLflow sqlite), audio-s/s as the run logged it (median
  of the log windows after the first: start-up and warm-up are not the steady state);
- **ratio**: job / bare, beside the run's own `perf/step_efficiency` (its bare step timed inside the run, on all
  workers at once: train/step_efficiency.py); then the job's `time_share/<phase>` medians.
Measure on a quiet machine (nothing else running) and quote the CPU model and flags with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PHASE_COLUMNS = ("data_wait", "forward", "backward", "optimizer", "logging", "checkpoint", "other")


def settings(corpus: Path, steps: int, tmp: Path) -> dict[str, tuple[str, dict]]:
    """Setting name -> (preset, typed overrides) for run_training."""
    import yaml

    demo = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())["pretrain"]["overrides"]
    common = {"data.path": str(corpus), "train.max_steps": steps, "train.log_every": max(1, steps // 6),
              "train.eval_every": 0, "checkpoint.every_steps": steps, "checkpoint.storage_path": str(tmp / "runs"),
              "tracking.uri": f"sqlite:///{tmp / 'mlflow.db'}"}
    return {"demo": ("configs/tiny.yaml", {**demo, **common}), "tiny": ("configs/tiny.yaml", dict(common))}


def bare_step(job, steps: int) -> float:
    """Audio-s/s of forward + backward + AdamW on the job's batches, one worker's threads, times its workers."""
    import torch

    from unispeech_core import UniSpeechForPreTraining
    from unispeech_core.quantizer import gumbel_temperature
    from unispeech_platform.data.decode import vocab_from
    from unispeech_platform.data.pipeline import iter_local_batches
    from unispeech_platform.runtime.hardware import detect_hardware, resolve_precision, threads_per_worker
    from unispeech_platform.train.engine import autocast
    from unispeech_platform.train.tasks.base import model_inputs

    t = job.train
    torch.set_num_threads(threads_per_worker(t.cpus_per_worker, os.cpu_count() or 1))
    precision = resolve_precision(t.precision, use_gpu=False, facts=detect_hardware(probe_cuda=False)).precision
    model = UniSpeechForPreTraining(job.model.unispeech_config(vocab_from(job.data.resolved_vocab_path()))).train()
    opt = torch.optim.AdamW(model.parameters(), lr=job.optim.lr)
    batches, epoch = [], 0
    while len(batches) < steps:  # read (and decode) before timing: the bare step has no data path
        batches += list(iter_local_batches(job.data, job.data.train_splits, epoch=epoch, train=True))
        epoch += 1
    cpu, c = torch.device("cpu"), model.config
    audio = seconds = 0.0
    for i, batch in enumerate(batches[:steps]):
        started = time.perf_counter()
        model.set_gumbel_temperature(gumbel_temperature(i, c.max_gumbel_temperature, c.min_gumbel_temperature,
                                                        c.gumbel_temperature_decay))
        with autocast(precision, False):
            out = model(**model_inputs(batch, cpu), labels=batch["labels"], labeled=batch["labeled"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # the first steps allocate and warm the caches
            seconds += time.perf_counter() - started
            audio += float(batch["attention_mask"].sum()) / 16_000
    return audio / seconds * t.num_workers


def job_run(job) -> dict[str, float]:
    """The job's steady audio-s/s and phase shares (medians over the log windows after the first)."""
    from unispeech_platform.tracking import metric_history
    from unispeech_platform.train import run_training

    result = run_training(job)

    def steady(key: str) -> float:
        values = [v for _, v in metric_history(result.tracking_uri, result.run_id, key)]
        return statistics.median(values[1:] or values) if values else float("nan")

    return {"audio": steady("audio_seconds_per_s"), "in_run": steady("perf/step_efficiency"),
            **{p: steady(f"time_share/{p}") for p in PHASE_COLUMNS},
            "run": f"{result.run_id} in {result.tracking_uri}"}


def parse_variant(text: str) -> tuple[str, dict]:
    """``zero0:train.zero_stage=0,data.max_batch_size=4`` -> ("zero0", {key: YAML value}): extra rows of a setting."""
    import yaml

    name, _, sets = text.partition(":")
    pairs = (item.split("=", 1) for item in sets.split(",") if item)
    return name, {key: yaml.safe_load(value) for key, value in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="existing corpus (default: generate es + it, 100 utterances each)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--precisions", default="fp32,auto")
    ap.add_argument("--settings", default="demo,tiny", help="which of: demo, tiny")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="also run each setting with these overrides, as its own rows (e.g. zero0:train.zero_stage=0)")
    ap.add_argument("--zero-memory", action="store_true", help="the ZeRO 0/1/2/3 per-rank memory table instead")
    args = ap.parse_args()
    if args.zero_memory:
        from bench.zero_memory import main as zero_memory

        zero_memory()
        return

    import ray

    from unispeech_platform.config import PretrainJobConfig, load_config
    from unispeech_platform.runtime.hardware import machine_line

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    corpus = Path(args.corpus) if args.corpus else tmp / "corpus"
    if not args.corpus:
        from unispeech_platform.data.synthetic import make_corpus

        make_corpus(corpus, ["es", "it"], 100, speakers=5, min_words=2, max_words=4, workers=1, progress=False)
    rows = []
    from unispeech_platform.runtime.ray_session import local_num_cpus

    ray.init(address="local", num_cpus=local_num_cpus(), include_dashboard=False)  # as the jobs start it
    try:
        chosen = {k: v for k, v in settings(corpus, args.steps, tmp).items() if k in args.settings.split(",")}
        for name, (preset, overrides) in chosen.items():
            for variant, extra in [("", {}), *map(parse_variant, args.variant)]:
                label = f"{name} {variant}".strip()
                for precision in args.precisions.split(","):
                    job = load_config(PretrainJobConfig, ROOT / preset, values={
                        **overrides, **extra, "train.precision": precision,
                        "checkpoint.name": f"{label.replace(' ', '-')}-{precision}"})
                    rows.append((label, precision, bare_step(job, args.steps), job_run(job)))
    finally:
        ray.shutdown()
    print(f"\n{machine_line()}; {args.steps} updates per job\n")
    print("| setting | precision | bare audio-s/s | job audio-s/s | job / bare | in-run perf/step_efficiency | "
          + " | ".join(PHASE_COLUMNS) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(PHASE_COLUMNS))
    for name, precision, bare, job in rows:
        shares = " | ".join(f"{100 * job[p]:.0f}%" for p in PHASE_COLUMNS)
        print(f"| {name} | {precision} | {bare:.1f} | {job['audio']:.1f} | {job['audio'] / bare:.2f} | "
              f"{job['in_run']:.2f} | {shares} |")
    print("\nMLflow runs (charts: tools/screenshot_charts.py --uri URI --run ID):")
    for name, precision, _, job in rows:
        print(f"  {name} {precision}: {job['run']}")


if __name__ == "__main__":
    main()
