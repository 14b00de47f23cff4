"""The promotion gate on its own: pure decisions, no MLflow, no registry, no files."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from tsessm.retrain.gate import (Decision, check_comparable, check_unmoved, decide, forecasts_finite, holdout_score,
                                 improvement)
from tsessm.retrain.outcome import RetrainError


def _result(mse: float, forecasts=(1.0, 2.0)) -> SimpleNamespace:
    return SimpleNamespace(scores={"mse": mse, "mae": mse / 2}, forecasts=np.array(forecasts))


def _model(horizon: int = 4, targets=("load",)) -> SimpleNamespace:
    return SimpleNamespace(horizon=horizon, target_columns_=list(targets))


def test_the_first_model_is_always_promoted():
    promote, reason = decide(3.0, None, None)
    assert promote and reason == "first model: no @champion yet; holdout mse 3"


@pytest.mark.parametrize("challenger, champion, margin, promote", [
    (0.90, 1.00, 0.02, True),    # 10 % better than a 2 % margin
    (0.99, 1.00, 0.02, False),   # 1 % better: not enough
    (0.98, 1.00, 0.02, True),    # exactly the margin
    (1.10, 1.00, 0.00, False),   # worse never wins, even with no margin
    (1.00, 1.00, 0.00, False),   # a tie keeps the champion
    (0.99, 1.00, 0.00, True),    # any gain with no margin
])
def test_the_challenger_must_beat_the_champion_by_the_margin(challenger, champion, margin, promote):
    decision = decide(challenger, champion, 4, metric="mae", margin=margin)
    assert isinstance(decision, Decision) and decision.promote is promote
    assert decision.reason.startswith(f"holdout mae {challenger:.4g} vs champion v4 {champion:.4g}: ")
    assert f"(margin {margin:.1%})" in decision.reason
    assert decision.reason.endswith("; @champion stays v4") is not promote


def test_a_champion_with_non_finite_forecasts_loses():
    promote, reason = decide(5.0, math.inf, 2)
    assert promote and reason == "champion v2's holdout forecasts are not finite; challenger mse 5"


def test_improvement_is_relative_and_survives_a_zero_champion():
    assert improvement(0.9, 1.0) == pytest.approx(0.1)
    assert improvement(1.2, 1.0) == pytest.approx(-0.2)
    assert improvement(0.0, 0.0) == 0.0  # both perfect: no gain
    assert decide(0.0, 0.0, 1).promote is False


def test_non_finite_forecasts_score_worst():
    assert forecasts_finite(_result(1.0)) and holdout_score(_result(1.0), "mse") == 1.0
    broken = _result(1.0, forecasts=(1.0, np.nan))
    assert not forecasts_finite(broken) and holdout_score(broken, "mse") == math.inf


def test_models_that_forecast_different_things_are_not_compared():
    check_comparable(_model(), _model(), 3)
    with pytest.raises(RetrainError, match=r"champion v3 and the challenger forecast different things "
                                           r"\(horizon 4 vs 8; targets \['load'\] vs \['temp'\]\)") as err:
        check_comparable(_model(4, ["load"]), _model(8, ["temp"]), 3)
    assert err.value.stage == "evaluate"


def test_a_moved_champion_stops_the_promotion():
    check_unmoved(None, None)
    check_unmoved(2, 2)
    with pytest.raises(RetrainError, match="@champion moved from v2 to v7 during this retrain") as err:
        check_unmoved(2, 7)
    assert err.value.stage == "promote"


def test_the_gate_decides_without_mlflow():
    """No MLflow, not even importable: the gate (and the package's import) still work."""
    code = textwrap.dedent("""
        import sys
        sys.modules["mlflow"] = None  # `import mlflow` now raises ImportError
        from tsessm.retrain.gate import decide
        import tsessm.retrain
        assert decide(0.5, 1.0, 1, margin=0.02).promote
        assert not decide(1.0, 1.0, 1).promote
        assert not any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules if sys.modules[m] is not None)
        print("decided")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "decided"
