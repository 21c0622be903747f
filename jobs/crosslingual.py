"""The paper's cross-lingual experiment as one job: three arms pretrained on the same labeled high-resource data
with the same steps -- supervised transfer (CTC only), self-supervised (contrastive only, wav2vec 2.0/XLSR-style)
and UniSpeech (joint, replace_prob 0.5) -- each fine-tuned on the low-resource targets and scored per language.

    python -m jobs.crosslingual --config configs/crosslingual_cpu.yaml      # ~1 h on a 2-core CPU
    python -m jobs.crosslingual --config configs/crosslingual_gpu.yaml      # GPU cluster (RAY_ADDRESS)

Logs a parent MLflow run with a child per arm, prints the table and writes it to experiment.results_path.
A previous run of the same experiment.name (its checkpoints under experiment.storage_path) is replaced only with
--overwrite; without it the job stops before any work (exit 3) and keeps it.
"""

from __future__ import annotations

from pathlib import Path

from unispeech_platform.experiments import cli


def main(argv: list[str] | None = None):
    cfg, command, overwrite = cli.parse("jobs.crosslingual", __doc__, "configs/crosslingual_cpu.yaml", argv)
    result = cli.run(cfg, overwrite=overwrite)
    from unispeech_platform.experiments.report import results_markdown
    from unispeech_platform.experiments.runner import machine

    text = results_markdown(cfg, result, command=command, date=cli.today(), machine=machine())
    print("\n" + text)
    if cfg.experiment.results_path:
        Path(cfg.experiment.results_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.experiment.results_path).write_text(text, encoding="utf-8")
        print(f"written: {cfg.experiment.results_path}")
    print(cli.mlflow_hint(result))
    return result


if __name__ == "__main__":
    main()
