"""The demo: synthetic corpus -> UniSpeech pretraining (2 Ray Train workers, DeepSpeed ZeRO-2) on labeled
high-resource languages -> CTC fine-tuning on low-resource targets -> per-language PER, all in MLflow.

`make demo` is `make setup` + `python -m jobs.quickstart --overwrite`.

Re-runs reuse the corpus. The previous run's checkpoints (runs/experiments/<experiment.name>) are replaced only
with --overwrite; without it a re-run stops before any work (exit 3) and keeps them. The MLflow store
(./mlflow.db) keeps every run.
"""

from __future__ import annotations

from unispeech_platform.experiments import cli

EXAMPLES = (
    "                          # configs/quickstart.yaml",
    "--set corpus.high_per_lang=100 --overwrite",
    "--config configs/quickstart_tiny.yaml",
)
DEFAULT_CONFIG = "configs/quickstart.yaml"


def main(argv: list[str] | None = None):
    cfg, _, overwrite, _ = cli.parse("jobs.quickstart", __doc__, DEFAULT_CONFIG, argv, examples=EXAMPLES)
    result = cli.run(cfg, overwrite=overwrite)
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
