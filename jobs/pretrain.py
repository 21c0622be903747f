"""UniSpeech multitask pretraining on Ray Train + DeepSpeed, tracked in MLflow.

    python -m jobs.pretrain --config configs/tiny.yaml [--set train.max_steps=50 ...] [--resume]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.pretrain --config ...
"""

from __future__ import annotations

from jobs._cli import parse_job_args, run_or_exit
from unispeech_platform.config import PretrainJobConfig


def main(argv: list[str] | None = None) -> None:
    cfg, ns = parse_job_args(__doc__.splitlines()[0], PretrainJobConfig, argv)
    from unispeech_platform.train import run_training

    result = run_or_exit(run_training, cfg, kind="pretrain", resume=ns.resume)
    print(f"model: {result.export_dir}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"mlflow run: {result.run_id} ({result.tracking_uri})")


if __name__ == "__main__":
    main()
