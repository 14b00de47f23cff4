"""The speed and size benchmark: training, size, streaming, backtest and memory ratios in one run.

    python pipelines/benchmark_speed.py                    # full run -> pipelines/results/speed.json
    python pipelines/benchmark_speed.py --quick --out /tmp/speed.json
    python pipelines/benchmark_speed.py --skip memory --threads 4 --device cuda

A thin wrapper around `tsessm.bench.speed` (the same as `tsessm bench speed ...`); `--help` lists
the measures, their goals and every option. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import sys

from tsessm.bench.speed import main

if __name__ == "__main__":
    sys.exit(main())
