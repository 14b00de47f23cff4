"""The accuracy benchmark's report: a markdown table next to S4's numbers and a plot per dataset.

A cell run with several seeds is shown as the seeds' mean ± standard deviation, and the eSSM is
marked against S4 and each baseline: ahead (✓) or behind (✗) only by more than the larger of the
two seed spreads, otherwise within the spread (≈).
"""
from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from tsessm.bench.reference import NLINEAR_ETTH1_S_720, s4  # noqa: E402
from tsessm.bench.results import ENSEMBLE_SUFFIX, SEEDED_MODELS  # noqa: E402

LABELS = {"essm": "eSSM", "lstm": "LSTM", "arima": "ARIMA", "naive": "naive", "linear": "linear"}
ORDER = ["essm", "lstm", "arima", "naive", "linear"]
BASELINES = [m for m in ORDER if m != "essm"]
SETTING_NAMES = {"S": "univariate (S)", "M": "multivariate (M)"}
# One-pass (streaming) counts as on par with windowed within this relative MSE gap.
ONE_PASS_TOLERANCE = 0.05
AHEAD, WITHIN, BEHIND = "✓", "≈", "✗"


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, setting, horizon, model, mode): the seeds' mean and sample std of
    MSE and MAE (std 0 for one seed), the number of seeds and the commits behind them."""
    table = _latest_configuration(table.copy())
    table["horizon"] = table["horizon"].astype(int)
    if "seed" not in table.columns:
        table["seed"] = 0
    if "commit" not in table.columns:
        table["commit"] = None
    keys = ["dataset", "setting", "horizon", "model", "mode"]
    out = table.groupby(keys).agg(mse=("mse", "mean"), mse_std=("mse", "std"), mae=("mae", "mean"),
                                  mae_std=("mae", "std"), seeds=("seed", "nunique"),
                                  commits=("commit", lambda c: sorted({str(x)[:7] for x in c.dropna()})))
    return out.fillna({"mse_std": 0.0, "mae_std": 0.0}).reset_index()


def _latest_configuration(table: pd.DataFrame) -> pd.DataFrame:
    """Of each cell's seeds, those run with the parameters of its newest row (seed aside): a seed
    left over from an earlier configuration is not averaged in."""
    if not {"params", "finished"} <= set(table.columns) or table.empty:
        return table
    table["_config"] = [json.dumps({k: v for k, v in json.loads(p).items() if k != "random_state"}, sort_keys=True)
                        if isinstance(p, str) else "" for p in table["params"]]
    cell = ["dataset", "setting", "horizon", "model"]
    newest = table.sort_values("finished").groupby(cell)["_config"].last().rename("_newest")
    table = table.join(newest, on=cell)
    return table[table["_config"] == table["_newest"]].drop(columns=["_config", "_newest"])


def mark(essm: tuple[float, float], other: tuple[float, float]) -> str:
    """✓ / ≈ / ✗ for the eSSM's (mean, std) MSE against another's: a gap counts beyond the larger spread."""
    margin = max(essm[1], other[1])
    if other[0] - essm[0] > margin:
        return AHEAD
    return BEHIND if essm[0] - other[0] > margin else WITHIN


def _fmt(row) -> str:
    if row.seeds > 1:
        return f"{row.mse:.4f} ± {row.mse_std:.4f} ({row.seeds}) / {row.mae:.3f}"
    return f"{row.mse:.4f} / {row.mae:.3f}"


def render_markdown(table: pd.DataFrame) -> str:
    """One section per (dataset, setting); MSE / MAE on scaled values, lowest windowed MSE in bold.
    Seed ensembles (`<model>_ens` rows), when there are any, get tables of their own after it."""
    summary = summarise(table)
    is_ensemble = summary["model"].str.endswith(ENSEMBLE_SUFFIX)
    singles, ensembles = summary[~is_ensemble], summary[is_ensemble]
    commits = sorted({c for cs in summary["commits"] for c in cs})
    lines = [
        "MSE / MAE on the test split, values scaled by the train split (Informer protocol). "
        "*windowed*: every origin sees only `lookback` rows (the protocol S4 reports); "
        "*one-pass*: the eSSM's streaming state over the whole history (what a deployment sees).",
        "",
        "A cell run with several seeds shows their mean ± standard deviation of the MSE and, in brackets, "
        "their number (the seeds run with the cell's newest parameters). "
        f"Marks compare the windowed eSSM with S4 and each baseline: {AHEAD} ahead, {BEHIND} behind, each by more "
        f"than the larger of the two seed spreads; {WITHIN} within the spread. "
        f"*one-pass / windowed*: the streaming MSE over the windowed one.",
        "",
        f"Rows from commit(s): {', '.join(commits) or 'unknown'}.",
    ]
    lines += _tables(singles, heading="###")
    if len(ensembles):
        groups = ["dataset", "setting", "horizon"]
        deterministic = singles[~singles["model"].isin(SEEDED_MODELS)].merge(ensembles[groups].drop_duplicates())
        renamed = ensembles.assign(model=ensembles["model"].str.removesuffix(ENSEMBLE_SUFFIX))
        members = sorted({m for m in renamed["model"]})
        lines += ["", "### Seed ensembles", "",
                  "Each neural model's seeds averaged into one forecast (`--ensemble`: the mean of the kept models' "
                  f"forecasts, nothing retrained), against the same deterministic baselines; ensembles of "
                  f"{', '.join(LABELS[m] for m in members)} only. Marks as above (an ensemble has no seed spread)."]
        lines += _tables(pd.concat([renamed, deterministic]), heading="###", suffix=" (seed ensembles)")
    return "\n".join(lines) + "\n"


def _tables(summary: pd.DataFrame, heading: str, suffix: str = "") -> list[str]:
    """The tally line, then one table per (dataset, setting) of `summary`."""
    lines: list[str] = []
    tally = {"rows": 0, "s4_rows": 0, "beats_s4": 0, "beats_ours": 0, "linear_rows": 0, "beats_linear": 0,
             "s_rows": 0, "one_pass_ok": 0}
    groups = sorted(summary.groupby(["dataset", "setting"]), key=lambda g: (g[0][0], g[0][1] != "S"))  # S, then M
    for (dataset, setting), part in groups:
        models = [m for m in ORDER if m in set(part["model"])]
        baselines = [m for m in BASELINES if m in models]
        header = ["H", "S4"] + [LABELS[m] for m in models]
        if "essm" in models:
            header += ["eSSM one-pass", "one-pass / windowed", "vs S4"] + [f"vs {LABELS[m]}" for m in baselines]
        lines += ["", f"{heading} {dataset}, {SETTING_NAMES.get(setting, setting)}{suffix}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for horizon, rows in part.groupby("horizon"):
            ref = s4(dataset, setting, int(horizon))
            windowed = {r.model: r for r in rows.itertuples() if r.mode == "windowed"}
            best = min((r.mse for r in windowed.values()), default=None)
            cells = [str(horizon), f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "–"]
            for m in models:
                text = _fmt(windowed[m]) if m in windowed else "–"
                cells.append(f"**{text}**" if m in windowed and windowed[m].mse == best else text)
            if "essm" in models:
                cells += _essm_cells(rows, windowed, ref, baselines, setting, tally)
            lines.append("| " + " | ".join(cells) + " |")
        if (dataset, setting) == ("ETTh1", "S") and 720 in set(part["horizon"]):
            mse, mae = NLINEAR_ETTH1_S_720
            lines += ["", f"Stretch goal for ETTh1 S 720: NLinear's {mse:.3f} / {mae:.3f} "
                          "(lookback 336, the newer protocol)."]
    if tally["rows"]:
        lines.insert(0, "\n" + _tally_line(tally))
    return lines


def _essm_cells(rows: pd.DataFrame, windowed: dict, ref: tuple[float, float] | None, baselines: list[str],
                setting: str, tally: dict[str, int]) -> list[str]:
    """The eSSM's one-pass cell, its ratio to windowed and its marks; counts them into `tally`."""
    one_pass = [r for r in rows.itertuples() if r.model == "essm" and r.mode == "one-pass"]
    essm = windowed.get("essm")
    cells = [_fmt(one_pass[0]) if one_pass else "–"]
    ratio = one_pass[0].mse / essm.mse if one_pass and essm is not None else None
    cells.append(f"{ratio:.3f}" if ratio is not None else "–")
    if essm is None:
        return cells + ["not run"] * (1 + len(baselines))
    mine = (essm.mse, essm.mse_std)
    vs_s4 = mark(mine, (ref[0], 0.0)) if ref else "–"
    marks = [mark(mine, (windowed[m].mse, windowed[m].mse_std)) if m in windowed else "–" for m in baselines]
    tally["rows"] += 1
    tally["s4_rows"] += ref is not None
    tally["beats_s4"] += vs_s4 == AHEAD
    ran = [k for k in marks if k != "–"]
    tally["beats_ours"] += bool(ran) and all(k == AHEAD for k in ran)
    if "linear" in windowed:
        tally["linear_rows"] += 1
        tally["beats_linear"] += marks[baselines.index("linear")] == AHEAD
    if setting == "S" and ratio is not None:
        tally["s_rows"] += 1
        tally["one_pass_ok"] += ratio <= 1 + ONE_PASS_TOLERANCE
    return cells + [vs_s4] + marks


def _tally_line(t: dict[str, int]) -> str:
    line = (f"Windowed eSSM: ahead of S4 in {t['beats_s4']} of {t['s4_rows']} rows with an S4 number; ahead of "
            f"every baseline run here in {t['beats_ours']} of {t['rows']} rows")
    if t["linear_rows"]:
        line += f"; ahead of the linear model in {t['beats_linear']} of {t['linear_rows']}"
    line += "."
    if t["s_rows"]:
        line += (f" One-pass within {ONE_PASS_TOLERANCE:.0%} of windowed in {t['one_pass_ok']} of {t['s_rows']} "
                 "univariate rows.")
    return line


def plot_dataset(table: pd.DataFrame, dataset: str, path: str | os.PathLike) -> None:
    """MSE against horizon for every model (one panel per setting; seed spread as error bars),
    S4's published numbers in black."""
    part = summarise(table[table["dataset"] == dataset])
    settings = [s for s in ("S", "M") if s in set(part["setting"])]
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        rows = part[part["setting"] == setting]
        for model in [m for m in ORDER if m in set(rows["model"])]:
            for mode, style in (("windowed", "-o"), ("one-pass", "--^")):
                line = rows[(rows["model"] == model) & (rows["mode"] == mode)].sort_values("horizon")
                if len(line):
                    label = LABELS[model] + ("" if mode == "windowed" else " one-pass")
                    ax.errorbar(line["horizon"], line["mse"], yerr=line["mse_std"], fmt=style, label=label,
                                lw=1.2, ms=4, capsize=2)
        refs = sorted((h, v[0]) for h in rows["horizon"].unique() if (v := s4(dataset, setting, int(h))))
        if refs:
            ax.plot([h for h, _ in refs], [v for _, v in refs], "k*:", label="S4 (paper)", ms=8)
        ax.set_title(f"{dataset} {SETTING_NAMES.get(setting, setting)}")
        ax.set_xlabel("horizon")
        ax.set_ylabel("test MSE (scaled)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
