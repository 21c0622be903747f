"""Fine-tune a pretrained UniSpeech model with CTC on phones (the best checkpoint by dev PER is kept)."""

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
