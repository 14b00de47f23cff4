"""Retrain a registered model on the latest data and promote it only if it beats the champion.

    python pipelines/retrain.py --config pipelines/retrain.example.toml [--force] [--dry-run] [-v]

A thin wrapper around `tsessm.retrain` (the same as `tsessm retrain --config ...` and the MLflow
project's `retrain` entry point); on a schedule: `tsessm schedule --cron "0 3 * * *" --config ...`.
Exit status: 0 promoted / not promoted / skipped, 1 failed, 2 invalid config, 3 already running.
"""
from __future__ import annotations

import sys

from tsessm.retrain import main

if __name__ == "__main__":
    sys.exit(main())
