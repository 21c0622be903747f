"""Fine-tune a pretrained UniSpeech model with CTC on phones (the best checkpoint by dev PER is kept).

finetune.init_from also takes an MLflow URI (runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>)
from tracking.uri's store, downloaded into <run dir>/init_model/ before Ray starts (docs/export.md).
"""

from __future__ import annotations

from jobs.pretrain import run_training_job
from unispeech_platform.config import FinetuneJobConfig

EXAMPLES = (
    "--config configs/finetune_tiny.yaml --set finetune.init_from=runs/tiny-pretrain/model",
    "--config finetune_tiny --set train.max_steps=20 --resume",
)


def main(argv: list[str] | None = None):
    return run_training_job(__doc__, FinetuneJobConfig, argv, EXAMPLES)


if __name__ == "__main__":
    main()
