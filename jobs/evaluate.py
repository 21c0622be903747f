"""Cross-lingual PER evaluation of a fine-tuned CTC model with Ray Data batch inference, logged to MLflow.

On a cluster, under the Ray Jobs API:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate --config ...
    python -m jobs.evaluate --config configs/evaluate_tiny.yaml --set evaluate.model_path=models:/phones/1

evaluate.model_path: a model dir, a training job dir, a step_N checkpoint, or an MLflow URI (runs:/<run_id>/model,
models:/<name>/<version>, models:/<name>@<alias>) from tracking.uri's store, downloaded into output_dir/model/.

A missing or corrupt model (also a config.json with a wrong type or an out-of-range value) or an unusable corpus
(wrong data.path, missing split, a garbage Parquet part) exits with status 3 and one line naming the file, before
Ray starts.
"""

from __future__ import annotations

from unispeech_platform.evaluate.config import EvaluateJobConfig
from unispeech_platform.runtime.cli import parse_job_args, run_or_exit
from unispeech_platform.tracking import run_line

EXAMPLES = (
    "--config configs/evaluate_tiny.yaml --set evaluate.model_path=runs/tiny-finetune",
    "--config evaluate_tiny --set evaluate.model_path=runs/tiny-finetune/model --set evaluate.num_actors=2",
)


def main(argv: list[str] | None = None):
    cfg, _ = parse_job_args(__doc__, EvaluateJobConfig, argv, resume=False, examples=EXAMPLES)
    from unispeech_platform.evaluate.job import run_evaluation

    result = run_or_exit(run_evaluation, cfg)
    print(result.table, end="")
    print(f"outputs: {result.out_dir}")
    if result.run_id:
        print(run_line(result.run_id, result.tracking_uri))
    return result


if __name__ == "__main__":
    main()
