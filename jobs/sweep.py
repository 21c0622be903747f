"""Ray Tune sweep of pretraining knobs (default: replace_prob, mask_time_prob, mask_time_length) with ASHA early
stopping; every trial is a Ray Train run, tracked as a nested MLflow run under the sweep's run.

Without --resume, a sweep whose name already left a directory under sweep.storage_path (<name>, <name>-trials or
<name>-report) stops before Ray starts (exit 3) and keeps it: continue it with --resume or choose another name.
"""

from __future__ import annotations

from unispeech_platform.runtime.cli import parse_job_args, run_or_exit
from unispeech_platform.tracking import run_line
from unispeech_platform.tune.config import SweepJobConfig

EXAMPLES = (
    "--config configs/sweep_tiny.yaml --set sweep.num_samples=8",
    "--config configs/sweep_tiny.yaml --resume   # continue a stopped sweep of the same name",
)


def main(argv: list[str] | None = None):
    cfg, ns = parse_job_args(__doc__, SweepJobConfig, argv, examples=EXAMPLES,
                             resume_help="continue the stopped sweep named sweep.name (finished trials are kept)")
    from unispeech_platform.tune.search_space import validate_sweep
    from unispeech_platform.tune.sweep import run_sweep

    run_or_exit(validate_sweep, cfg.sweep)  # every trial's config must validate: exit 2 here, not in trial N

    result = run_or_exit(run_sweep, cfg, resume=ns.resume)
    for row in result.rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if result.best:
        print(f"best trial: {result.best['trial']}; ready-to-run config: {result.best_config}")
    print(f"report: {result.report_dir}")
    if result.parent_run_id:
        print(run_line(result.parent_run_id, result.tracking_uri))
    return result


if __name__ == "__main__":
    main()
