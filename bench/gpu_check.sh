#!/usr/bin/env bash
# One-GPU acceptance check of the platform (bench/gpu_check.py): GPU/CPU parity, BASE pretraining with 1 GPU worker,
# ZeRO-2 and bf16 (throughput and MFU), fine-tuning and evaluation. Prints one table; exits non-zero on any failure.
#   bench/gpu_check.sh [--dry-run] [--workdir DIR] [--optimizer auto|fused|torch]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq espeak-ng; } >&2 \
        || echo "WARNING: espeak-ng missing and could not be installed; the corpus check will fail" >&2
fi
[ -f .venv/.installed ] || make setup >&2
export RAY_USAGE_STATS_ENABLED=0
# 470 s: the script's own budget (--budget-s 450) leaves time to print the table before this fires.
exec timeout --kill-after=10 470 .venv/bin/python bench/gpu_check.py "$@"
