"""Options of `tsessm tune` that the command line and the tuner share; light to import (no torch,
optuna or pandas), so `tsessm --help` stays fast."""
DEFAULT_STORAGE = "sqlite:///optuna.db"
PRUNERS = ("median", "hyperband", "none")
