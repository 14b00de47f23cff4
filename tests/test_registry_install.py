"""A logged model installs: loaded in a fresh virtual environment without tsessm, it forecasts as in process.

The environment is made by the test, offline, in a few seconds:

1. ``python -m venv --system-site-packages --without-pip``: a venv made from the test interpreter
   (itself maybe a venv's) links to the base interpreter and sees the base's site-packages.
2. torch, mlflow and the rest usually live in the test environment's own site-packages (a venv,
   where tsessm is an editable install), which --system-site-packages does not reach. The test
   links every entry of those folders into one folder, *except* tsessm, its dist-info, the
   editable install's finder and every ``.pth`` file, and a ``.pth`` file in the new venv lists
   that folder. So the other packages are reused as installed, and no tsessm can be found: the
   test checks that ``import tsessm`` fails there before installing anything.
3. As MLflow's virtualenv env manager does, ``python -m pip install -r requirements.txt`` runs
   inside the model folder (offline: ``--no-index --no-deps``): the pinned requirements are
   already satisfied by the reused packages, and the wheel is installed from the relative path
   the model's requirements.txt names (``artifacts/tsessm-<version>+g<hash>-py3-none-any.whl``).
4. A script in the venv checks that tsessm now comes from the venv, loads the model with
   ``mlflow.pyfunc.load_model`` and forecasts from the logged state, after new rows given as ISO
   strings, and for a subset of steps; the forecasts equal the in-process ones (<= 1e-6).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import tsessm
from tsessm import tracking

TARGETS = ["load", "temp"]

_SCRIPT = """\
import json, sys
import pandas as pd
import tsessm
import mlflow.pyfunc

assert tsessm.__file__.startswith(sys.prefix), tsessm.__file__
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.DataFrame(json.loads(sys.argv[2]))
out = {
    "tsessm": tsessm.__file__,
    "logged": model.predict(pd.DataFrame()).to_dict(orient="list"),
    "rows": model.predict(rows).to_dict(orient="list"),
    "fh": model.predict(rows, params={"fh": [2, 4]}).to_dict(orient="list"),
}
print("RESULT " + json.dumps(out))
"""


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    t = np.arange(n)
    index = pd.date_range("2024-01-01", periods=n, freq="h", name="time")
    return pd.DataFrame({"load": np.sin(t / 6) + rng.normal(0, 0.1, n),
                         "temp": np.cos(t / 11) + rng.normal(0, 0.1, n)}, index=index)


def _site_dirs() -> list[Path]:
    """The test environment's site-packages folders (where torch, mlflow & co. are installed)."""
    dirs = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.name in ("site-packages", "dist-packages") and path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def _hidden(name: str) -> bool:
    """Entries of site-packages the fresh venv must not see: tsessm in any form, and .pth files."""
    lowered = name.lower()
    return (lowered == "tsessm" or lowered.startswith(("tsessm-", "tsessm.", "__editable__"))
            or lowered.endswith(".pth") or lowered == "__pycache__")


def _fresh_venv(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=120)
    shared = root / "shared-site-packages"
    shared.mkdir()
    for site_dir in _site_dirs():
        for entry in sorted(site_dir.iterdir()):
            link = shared / entry.name
            if not _hidden(entry.name) and not link.exists():
                link.symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True, cwd=root, env=_env()).stdout.strip()
    (Path(purelib) / "_test_environment_packages.pth").write_text(f"{shared}\n", encoding="utf-8")
    return python


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")
    return env


def _values(frame) -> np.ndarray:
    return np.asarray(pd.DataFrame(frame)[TARGETS], dtype="float64")


def test_logged_model_installs_and_forecasts_in_a_fresh_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    monkeypatch.setenv("TSESSM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = _frame()
    train, new = data.iloc[:190], data.iloc[190:195]
    model = tsessm.ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                                  steps_per_epoch=2, verbose=0, random_state=0).fit(train)
    try:
        with tracking.start_run(True, "install-test", run_name="log") as tracker:
            info = tracker.log_model(model, name="essm")
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
        pyfunc = mlflow.pyfunc.load_model(str(local))
    finally:
        mlflow.set_tracking_uri(None)

    # requirements.txt names the wheel by a path relative to the model folder, and it is there
    requirements = (local / "requirements.txt").read_text().split()
    wheels = [r for r in requirements if r.endswith(".whl")]
    assert len(wheels) == 1 and wheels[0].startswith("artifacts/tsessm-") and (local / wheels[0]).is_file()
    assert not any(r.split("==")[0] == "tsessm" for r in requirements)

    iso_rows = {"time": [t.isoformat() for t in new.index], **{c: new[c].tolist() for c in TARGETS}}
    expected = {"logged": pyfunc.predict(pd.DataFrame()), "rows": pyfunc.predict(pd.DataFrame(iso_rows)),
                "fh": pyfunc.predict(pd.DataFrame(iso_rows), params={"fh": [2, 4]})}
    # ISO strings in process = datetimes in process = the model's own forecast
    np.testing.assert_allclose(_values(expected["rows"]), _values(pyfunc.predict(new.reset_index())), atol=0)
    np.testing.assert_allclose(_values(expected["rows"]), _values(copy.deepcopy(model).update(new).predict()),
                               rtol=0, atol=1e-9)

    python = _fresh_venv(tmp_path)
    probe = subprocess.run([str(python), "-c", "import tsessm"], capture_output=True, text=True,
                           cwd=tmp_path, env=_env(), timeout=120)
    assert probe.returncode != 0 and "No module named 'tsessm'" in probe.stderr, (
        f"tsessm is importable before installing the wheel:\n{probe.stdout}{probe.stderr}")

    install = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                              "-r", "requirements.txt"],
                             capture_output=True, text=True, cwd=local, env=_env(), timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    script = tmp_path / "forecast_in_venv.py"
    script.write_text(_SCRIPT, encoding="utf-8")
    run = subprocess.run([str(python), str(script), str(local), json.dumps(iso_rows)],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["tsessm"].startswith(str(tmp_path / "venv"))
    for key, frame in expected.items():
        got = pd.DataFrame(result[key])
        assert got["time"].tolist() == frame["time"].tolist() and got["step"].tolist() == frame["step"].tolist()
        np.testing.assert_allclose(_values(got), _values(frame), rtol=0, atol=1e-6)
