"""Language identification: fine-tune UniSpeechForSequenceClassification on the corpus' languages (Ray Train),
then report accuracy and a confusion matrix on the eval splits (Ray Data), logged to the training run.

finetune.init_from also takes an MLflow URI (runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>).
"""

from __future__ import annotations

import os

from unispeech_platform.config import FinetuneJobConfig
from unispeech_platform.runtime.cli import parse_job_args, run_or_exit
from unispeech_platform.tracking import run_line

EXAMPLES = (
    "--config configs/lid_tiny.yaml",
    "--config configs/lid_tiny.yaml --set finetune.init_from=runs/tiny-pretrain/model",
)


def main(argv: list[str] | None = None):
    cfg, ns = parse_job_args(__doc__, FinetuneJobConfig, argv, examples=EXAMPLES)
    from unispeech_platform.evaluate.lid import evaluate_lid, lid_report_dir
    from unispeech_platform.train import run_training
    from unispeech_platform.train.tasks.lid import prepare_lid_job

    job = run_or_exit(prepare_lid_job, cfg)
    result = run_or_exit(run_training, job, resume=ns.resume)
    best = result.layout.best_export_dir
    model_dir = best if os.path.isdir(best) else result.layout.export_dir
    report = run_or_exit(evaluate_lid, job, model_dir, lid_report_dir(job), uri=result.tracking_uri,
                         run_id=result.run_id)
    print(f"LID accuracy {100 * report.accuracy:.1f}% on {','.join(job.data.eval_splits)}: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in report.per_language.items()))
    print(f"confusion (rows true, cols predicted; {report.labels}): {report.confusion}")
    print(f"model: {model_dir}\nreport: {report.out_dir}")
    if result.run_id:
        print(run_line(result.run_id, result.tracking_uri))
    return report


if __name__ == "__main__":
    main()
