"""UniSpeech multitask pretraining on Ray Train + DeepSpeed, tracked in MLflow.

On a cluster, the same command under the Ray Jobs API:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.pretrain --config ...

pretrain.init_from (continued pretraining) takes a model path or an MLflow URI (runs:/<run_id>/model,
models:/<name>/<version>, models:/<name>@<alias>), downloaded into <run dir>/init_model/ before Ray starts.
"""

from __future__ import annotations

from unispeech_platform.config import PretrainJobConfig
from unispeech_platform.runtime.cli import parse_job_args, run_or_exit

EXAMPLES = (
    "--config configs/tiny.yaml --set train.max_steps=50",
    "--config tiny --set train.zero_stage=3 --set model.replace_prob=0.3",
    "--config configs/tiny.yaml --resume   # continue the run named checkpoint.name",
)


def run_training_job(doc: str, config_cls: type[PretrainJobConfig], argv: list[str] | None,
                     examples: tuple[str, ...]):
    """Parse -> train (the config's task) -> print where the model, checkpoint and MLflow run are."""
    cfg, ns = parse_job_args(doc, config_cls, argv, examples=examples)
    from unispeech_platform.train import run_training

    result = run_or_exit(run_training, cfg, resume=ns.resume)
    print("\n".join(result.summary()))
    return result


def main(argv: list[str] | None = None):
    return run_training_job(__doc__, PretrainJobConfig, argv, EXAMPLES)


if __name__ == "__main__":
    main()
