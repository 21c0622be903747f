"""The paper's cross-lingual experiment as one job: three arms pretrained on the same high-resource data with the
same updates and batch budget -- supervised transfer (CTC only, labeled rows only), self-supervised (contrastive
only, wav2vec 2.0/XLSR-style) and UniSpeech (joint CTC + contrastive with replace_prob) -- each fine-tuned on the
low-resource targets and scored per language (test, and test_shifted when the corpus has it).

The configs (examples below): crosslingual_cpu.yaml, labeled only (2-core CPU with native bf16: 91 min measured;
~3.7 h in fp32 without bf16: docs/performance.md); crosslingual_cpu_unlabeled.yaml, + unlabeled target audio;
crosslingual_gpu.yaml, a GPU cluster (RAY_ADDRESS).

Every arm runs once per seed (experiment.seeds); the table shows mean ± sd over seeds and the reference arm's
relative PER reductions with hierarchical bootstrap 95% CIs (seeds, then test speakers, then utterances), and a
pretraining health row per arm and seed (contrastive loss against chance, code perplexity, failure states named;
docs/training.md#per-seed-in-an-experiment). Logs a parent MLflow run with a child per arm and seed, prints the
results and writes them into experiment.results_path between the markers
<!-- BEGIN GENERATED: <experiment.name> --> and <!-- END GENERATED: <experiment.name> -->, leaving the rest of the
file (the hand-written reading) alone. A previous run of the same experiment.name (its checkpoints under
experiment.storage_path) is replaced only with --overwrite; without it the job stops before any work (exit 3)
and keeps it. A stopped run (Ctrl-C, a lost machine, a failed step) continues with --resume and the same config:
arms and seeds that finished are kept (<storage_path>/<name>/<arm>-s<seed>-result.json), the first unfinished
one starts again from pretraining, and the parent MLflow run is reopened (docs/results.md#running-it).
"""

from __future__ import annotations

from unispeech_platform.experiments import cli
from unispeech_platform.runtime.cli import run_or_exit

EXAMPLES = (
    "--config configs/crosslingual_cpu.yaml             # labeled only",
    "--config configs/crosslingual_cpu_unlabeled.yaml   # + unlabeled target audio",
    "--config configs/crosslingual_gpu.yaml             # GPU cluster (RAY_ADDRESS)",
    "--config configs/crosslingual_cpu.yaml --resume    # continue a stopped run",
)
DEFAULT_CONFIG = "configs/crosslingual_cpu.yaml"


def main(argv: list[str] | None = None):
    cfg, command, overwrite, resume = cli.parse("jobs.crosslingual", __doc__, DEFAULT_CONFIG, argv,
                                                examples=EXAMPLES, resumable=True)
    from unispeech_platform.experiments.results_block import check_results_file, write_results_block

    if cfg.experiment.results_path:  # broken markers found now, not after hours of training (exit 3)
        run_or_exit(check_results_file, cfg.experiment.results_path, cfg.experiment.name)
    result = cli.run(cfg, overwrite=overwrite, resume=resume)
    from unispeech_platform.experiments.report import results_markdown
    from unispeech_platform.runtime.hardware import machine_line

    text = results_markdown(cfg, result, command=command, date=cli.today(), machine=machine_line())
    print("\n" + text)
    if cfg.experiment.results_path:
        path = run_or_exit(write_results_block, cfg.experiment.results_path, cfg.experiment.name, text)
        print(f"written: the block '{cfg.experiment.name}' of {path}")
    print(cli.mlflow_hint(result))
    return result


if __name__ == "__main__":
    main()
