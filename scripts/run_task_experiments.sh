#!/usr/bin/env bash
# The experiment matrix: prune with one data set, fine-tune on another, evaluate on every task.
# This wrapper runs scripts/run_experiments.py with $PYTHON (default: python) and passes every flag on; every
# flag and environment variable, the presets, the output layout and resuming are described by --help.
#
#   bash scripts/run_task_experiments.sh --preset cpu-smoke --data_dir DATA --out out/smoke
#   EXPS="baseline exp1" NSAMPLES=16 bash scripts/run_task_experiments.sh --dry_run
#   bash scripts/run_task_experiments.sh --help
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "${PYTHON:-python}" "$REPO/scripts/run_experiments.py" "$@"
