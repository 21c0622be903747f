"""The demo: synthetic corpus -> UniSpeech pretraining (2 Ray Train workers, DeepSpeed ZeRO-2) on labeled
high-resource languages -> CTC fine-tuning on low-resource targets -> per-language PER, all in MLflow.

    python -m jobs.quickstart [--config configs/quickstart.yaml] [--set corpus.high_per_lang=100 ...]
    make demo            # = make setup + python -m jobs.quickstart

Re-runs reuse the corpus and replace the previous run's checkpoints; the MLflow store (./mlflow.db) keeps every run.
"""

from __future__ import annotations

from unispeech_platform.experiments import cli


def main(argv: list[str] | None = None):
    cfg, _ = cli.parse("jobs.quickstart", __doc__, "configs/quickstart.yaml", argv)
    result = cli.run(cfg)
    print("\n" + "=" * 100)
    arm = result.arms[0]
    print(f"Phone error rate (PER %) of the fine-tuned model on held-out speakers of the targets "
          f"{cfg.corpus.low_resource} (arm: {arm.name}):\n")
    from unispeech_platform.evaluate.report import markdown_table

    print(markdown_table(arm.scores))
    print(f"stage times:\n{result.timings}")
    print(f"total: {result.seconds:.0f} s")
    print(cli.mlflow_hint(result))
    return result


if __name__ == "__main__":
    main()
