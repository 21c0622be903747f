"""Per-rank state memory (and throughput) for ZeRO 0/1/2/3 on CPU, measured through the real job path.

    .venv/bin/python bench/zero_memory.py [--corpus DIR] [--steps 12] [--preset configs/tiny.yaml]
    (or bench/train_throughput.py --zero-memory)

Runs jobs' `run_training` (Ray Train + DeepSpeed + MLflow) on a generated corpus and prints:
  - audio-seconds/s (all ranks, mean over logged windows after the first) for 1 vs 2 workers (ZeRO-0);
  - per-rank parameters + optimizer state (MB, measured from the tensors each rank holds: parameters or their
    ZeRO-3 partitions, fp32 master partitions, Adam moments) for ZeRO 0/1/2/3 with 2 workers.
ZeRO-3 runs with stage3_param_persistence_threshold=0 so that even small tensors are partitioned.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="existing corpus (default: generate ~100 es utterances)")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "tiny.yaml"))
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args([a for a in sys.argv[1:] if a != "--zero-memory"])

    import ray

    from unispeech_platform.config import PretrainJobConfig, load_config
    from unispeech_platform.tracking import metric_history
    from unispeech_platform.train import run_training

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    corpus = Path(args.corpus) if args.corpus else tmp / "corpus"
    if not args.corpus:
        from unispeech_platform.data.synthetic import make_corpus

        make_corpus(corpus, ["es"], 100, speakers=5, min_words=2, max_words=3, workers=1, progress=False)

    def run(name: str, workers: int, stage: int) -> dict[str, float]:
        overrides = [
            f"data.path={corpus}", "data.max_batch_size=4", "data.decode_batch_rows=4",
            "ray.data_context.target_max_block_size=262144",
            f"checkpoint.storage_path={tmp / 'runs'}", f"checkpoint.name={name}",
            f"checkpoint.every_steps={args.steps}", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            f"train.num_workers={workers}", f"train.zero_stage={stage}", f"train.max_steps={args.steps}",
            "train.log_every=2", "train.eval_every=0", "train.eval_max_batches=1",
        ]
        if stage == 3:
            overrides.append("train.deepspeed={zero_optimization: {stage3_param_persistence_threshold: 0}}")
        result = run_training(load_config(PretrainJobConfig, args.preset, overrides))
        hist = {k: [v for _, v in metric_history(result.tracking_uri, result.run_id, k)]
                for k in ("audio_seconds_per_s", "memory/params_mb", "memory/optimizer_mb", "seconds_per_update")}
        return {
            "audio_s_per_s": statistics.mean(hist["audio_seconds_per_s"][1:] or hist["audio_seconds_per_s"]),
            "s_per_update": statistics.mean(hist["seconds_per_update"][1:] or hist["seconds_per_update"]),
            "params_mb": hist["memory/params_mb"][-1],
            "optim_mb": hist["memory/optimizer_mb"][-1],
        }

    ray.init(address="local", num_cpus=8, include_dashboard=False)
    try:
        rows = [("1 worker, ZeRO-0", run("w1z0", 1, 0))]
        rows += [(f"2 workers, ZeRO-{s}", run(f"w2z{s}", 2, s)) for s in (0, 1, 2, 3)]
    finally:
        ray.shutdown()
    print(f"\npreset {Path(args.preset).name}, {args.steps} updates, CPU fp32, {os.cpu_count()} cores\n")
    print("| run | audio-s/s (all ranks) | s/update | params MB/rank | optimizer state MB/rank | total MB/rank |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        total = r["params_mb"] + r["optim_mb"]
        print(f"| {name} | {r['audio_s_per_s']:.1f} | {r['s_per_update']:.2f} | {r['params_mb']:.2f} | "
              f"{r['optim_mb']:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
