"""`python -m tsessm.retrain --config retrain.toml`: the same as `tsessm retrain`."""
import sys

from tsessm.retrain.cli import main

sys.exit(main())
