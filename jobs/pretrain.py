"""UniSpeech multitask pretraining on Ray Train + DeepSpeed, tracked in MLflow.

    python -m jobs.pretrain --config configs/tiny.yaml [--set train.max_steps=50 ...] [--resume]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.pretrain --config ...

pretrain.init_from (continued pretraining) takes a model path or an MLflow URI (runs:/<run_id>/model,
models:/<name>/<version>, models:/<name>@<alias>), downloaded into <run dir>/init_model/ before Ray starts.
"""

from __future__ import annotations

from unispeech_platform.config import PretrainJobConfig
from unispeech_platform.runtime.cli import parse_job_args, run_or_exit


def run_training_job(doc: str, config_cls: type[PretrainJobConfig], argv: list[str] | None):
    """Parse -> train (the config's task) -> print where the model, checkpoint and MLflow run are."""
    cfg, ns = parse_job_args(doc, config_cls, argv)
    from unispeech_platform.train import run_training

    result = run_or_exit(run_training, cfg, resume=ns.resume)
    print("\n".join(result.summary()))
    return result


def main(argv: list[str] | None = None):
    return run_training_job(__doc__, PretrainJobConfig, argv)


if __name__ == "__main__":
    main()
