"""The accuracy benchmark: datasets x settings x horizons x models on the Informer protocol.

    python pipelines/benchmark_accuracy.py --quick            # minutes: ETTh1 univariate, H 24 and 48
    python pipelines/benchmark_accuracy.py                    # the whole grid (hours on 2 cores; resumable)
    python pipelines/benchmark_accuracy.py --datasets ETTh1 --settings S --horizons 720 --models essm
    python pipelines/benchmark_accuracy.py --report-only      # re-render accuracy.md and the plots

The same as `tsessm bench accuracy ...`. Results: pipelines/results/accuracy.csv (one row per
cell and backtest mode), accuracy.md (the table next to S4's numbers), accuracy_<dataset>.png.
Model parameters per cell: tsessm/bench/accuracy.toml.
"""
from __future__ import annotations

import sys

from tsessm.bench.accuracy import main

if __name__ == "__main__":
    sys.exit(main())
