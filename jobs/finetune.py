"""Fine-tune a pretrained UniSpeech model with CTC on phones (the best checkpoint by dev PER is kept).

    python -m jobs.finetune --config configs/finetune_tiny.yaml --set finetune.init_from=runs/tiny/model
"""

from __future__ import annotations

from jobs._cli import parse_job_args, run_or_exit
from unispeech_platform.config import FinetuneJobConfig


def main(argv: list[str] | None = None) -> None:
    cfg, ns = parse_job_args(__doc__.splitlines()[0], FinetuneJobConfig, argv)
    from unispeech_platform.train import run_training

    result = run_or_exit(run_training, cfg, kind=cfg.finetune.task, resume=ns.resume)
    print(f"model: {result.export_dir} (best by dev PER: {result.export_dir}_best)")
    print(f"checkpoint: {result.checkpoint}")
    print(f"mlflow run: {result.run_id} ({result.tracking_uri})")


if __name__ == "__main__":
    main()
