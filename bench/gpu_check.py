"""One-GPU acceptance check: does the platform run, and run fast, on the GPU it lands on? Prints ONE table
(check | result | value | pass) and exits 1 when any check fails.

    bench/gpu_check.sh                    # venv via `make setup` if missing, then this script under `timeout 470`
    python bench/gpu_check.py --dry-run   # print the commands and the pretraining config; run nothing

Rows: the hardware facts and what precision=auto makes of them; fp32 parity of UniSpeechForPreTraining and
UniSpeechForCTC on GPU vs CPU; a synthetic corpus (jobs.make_corpus, espeak-ng); the BASE preset
(configs/base.yaml) pretrained for a few dozen updates through the real `python -m jobs.pretrain` on a local Ray
with 1 GPU worker, ZeRO-2 and bf16, its throughput read back from MLflow and turned into MFU with the counted
model FLOPs and the GPU's dense bf16 peak; a short `jobs.finetune` from that export; `jobs.evaluate` on a GPU
actor. Every step gets a share of one time budget, so the table is printed before the outer timeout fires.

This file is the entry point (arguments, dry run, exit code); the check's pieces live in bench/gpu/.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_check.py` puts bench/, not the repo root, on sys.path
    sys.path.insert(0, str(REPO))

from bench.gpu.check import Check  # noqa: E402  (needs the repo root on sys.path, set just above)
from bench.gpu.plan import BASE_CONFIG, Plan, nvcc_available  # noqa: E402
from bench.gpu.runner import Budget  # noqa: E402
from bench.gpu.table import Row, render, tail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the commands and the pretraining config, run nothing")
    p.add_argument("--workdir", default=None, help="where corpus, runs, MLflow store and logs go (default: a temp dir)")
    p.add_argument("--steps", type=int, default=60, help="pretraining updates")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all steps together")
    p.add_argument("--optimizer", choices=("auto", "fused", "torch"), default="auto",
                   help="DeepSpeed FusedAdam (needs nvcc) or torch AdamW; auto = fused when nvcc is found")
    a = p.parse_args(argv)
    if a.workdir:
        workdir = Path(a.workdir).resolve()
    elif a.dry_run:
        workdir = Path(tempfile.gettempdir()) / "unispeech-gpu-check"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="unispeech-gpu-check-"))
    torch_adam = a.optimizer == "torch" or (a.optimizer == "auto" and not nvcc_available())
    plan = Plan(workdir, steps=a.steps, torch_adam=torch_adam)

    if a.dry_run:
        print(f"# commands (run in {REPO})")
        for name, cmd in plan.commands().items():
            print(f"{name}: {shlex.join(cmd)}")
        from unispeech_platform.config import ConfigError, to_yaml

        try:
            configs = plan.configs()
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        print(f"# table rows: {', '.join(Check.ROWS)}")
        print(f"# pretraining config ({BASE_CONFIG} + overrides; finetune and evaluate configs validate too)")
        print(to_yaml(configs["pretrain"]), end="")
        return 0

    budget = Budget(a.budget_s)
    check = Check(plan, budget)
    try:
        check.run()
    except Exception as e:  # never lose the table
        check.rows.append(Row("check", f"crashed: {type(e).__name__}", str(e)[:80], False))
    print(render(check.rows))
    print(f"work dir: {workdir}")
    failed = [r for r in check.rows if r.ok is False]
    for r in failed:
        if r.log:
            print(f"\n--- {r.check}: last lines of {r.log}\n{tail(r.log)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
