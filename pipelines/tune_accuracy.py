"""Equal-budget Optuna studies of the eSSM and the LSTM for accuracy-grid cells.

    python pipelines/tune_accuracy.py --datasets ETTh2,WTH --horizons 720 --n-trials 10 --epochs 8

Trials: pipelines/results/studies/<dataset>_<setting>_<horizon>_<model>.csv; summary: studies.md.
See tsessm/bench/studies.py.
"""
from __future__ import annotations

import sys

from tsessm.bench.studies import main

if __name__ == "__main__":
    sys.exit(main())
