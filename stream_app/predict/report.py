"""Holdout validation of a fitted BG/NBD: actual vs predicted purchases, by calibration-period frequency.

This is the check of Fader, Hardie & Lee (2005), figure 4 ("conditional expectations"): customers are
grouped by their number of repeat purchases in the calibration period (0, 1, ..., 6, 7+); for each group
the mean number of repeat purchases actually made in the holdout period is set beside the mean of
E[Y(t) | x, t_x, T] (eq. 10) with t the holdout length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bgnbd import BGNBDParams, conditional_expected_purchases
from .gamma_gamma import GammaGammaParams
from .summary import CustomerSummary

TOP_GROUP = 7  # customers with 7 or more calibration repeat purchases are one group, "7+"
REPORT_FILE = "report.md"
PLOT_FILE = "conditional_expectations.png"


@dataclass(frozen=True)
class HoldoutRow:
    label: str  # "0" .. "6", "7+"
    n_customers: int
    actual: float  # mean repeat purchases in the holdout; NaN for an empty group
    predicted: float  # mean E[Y(holdout length) | x, t_x, T]; NaN for an empty group


def holdout_table(params: BGNBDParams, summary: CustomerSummary) -> list[HoldoutRow]:
    """Eight rows, for calibration repeat purchases 0..6 and 7+; needs a summary built with a holdout."""
    if summary.x_holdout is None or summary.holdout_length is None:
        raise ValueError("the summary has no holdout period; build it with a holdout end date")
    predicted = np.asarray(conditional_expected_purchases(params, summary.holdout_length, summary.x, summary.t_x, summary.T))
    group = np.minimum(summary.x, TOP_GROUP)
    rows = []
    for value in range(TOP_GROUP + 1):
        members = group == value
        count = int(np.count_nonzero(members))
        rows.append(
            HoldoutRow(
                label=f"{value}+" if value == TOP_GROUP else str(value),
                n_customers=count,
                actual=float(np.mean(summary.x_holdout[members])) if count else math.nan,
                predicted=float(np.mean(predicted[members])) if count else math.nan,
            )
        )
    return rows


def _cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def _estimate(value: float, error: float | None) -> str:
    if error is None or not math.isfinite(error):
        return f"{value:.4f}"
    return f"{value:.4f} (s.e. {error:.4f})"


def render_markdown(
    rows: list[HoldoutRow],
    params: BGNBDParams,
    summary: CustomerSummary,
    command: str,
    gamma_gamma: GammaGammaParams | None = None,
) -> str:
    """The report as Markdown: the command, the periods, the parameters and the holdout table."""
    if summary.holdout_end is None or summary.holdout_length is None:
        raise ValueError("the summary has no holdout period; build it with a holdout end date")
    unit = summary.unit
    lines = [
        "# Holdout validation of the BG/NBD model",
        "",
        f"Command: `{command}`",
        "",
        f"Calibration: first purchases up to {summary.calibration_end.isoformat()} (inclusive); holdout: "
        f"{summary.calibration_end.isoformat()} (exclusive) to {summary.holdout_end.isoformat()} (inclusive), "
        f"{summary.holdout_length:.4g} {unit}. {summary.n_customers} customers, {summary.n_repeat_customers} "
        "with a repeat purchase in the calibration period.",
        "",
        "| model | parameters | log-likelihood |",
        "|---|---|---|",
        f"| BG/NBD | r = {_estimate(params.r, params.std_errors.get('r'))}, "
        f"alpha = {_estimate(params.alpha, params.std_errors.get('alpha'))}, "
        f"a = {_estimate(params.a, params.std_errors.get('a'))}, "
        f"b = {_estimate(params.b, params.std_errors.get('b'))} | {params.log_likelihood:.2f} |",
    ]
    if gamma_gamma is not None:
        errors = gamma_gamma.std_errors
        lines.append(
            f"| Gamma-Gamma | p = {_estimate(gamma_gamma.p, errors.get('p'))}, q = {_estimate(gamma_gamma.q, errors.get('q'))}, "
            f"gamma = {_estimate(gamma_gamma.gamma, errors.get('gamma'))} | {gamma_gamma.log_likelihood:.2f} |"
        )
    lines += [
        "",
        f"Time unit: {unit}. Mean repeat purchases in the holdout period, by repeat purchases in the calibration period:",
        "",
        "| calibration repeat purchases | customers | actual (holdout mean) | predicted (BG/NBD, eq. 10) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {row.label} | {row.n_customers} | {_cell(row.actual)} | {_cell(row.predicted)} |" for row in rows]
    total = sum(row.n_customers for row in rows)
    if total:
        actual = sum(row.actual * row.n_customers for row in rows if row.n_customers) / total
        predicted = sum(row.predicted * row.n_customers for row in rows if row.n_customers) / total
        lines += ["", f"All {total} customers: actual {actual:.3f}, predicted {predicted:.3f} repeat purchases per customer."]
    return "\n".join(lines) + "\n"


def plot_conditional_expectations(rows: list[HoldoutRow], path: str | Path, title: str | None = None) -> Path:
    """Actual and predicted holdout means by calibration repeat purchases, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    positions = np.arange(len(rows))
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        axes.plot(positions, [row.actual for row in rows], marker="o", label="actual")
        axes.plot(positions, [row.predicted for row in rows], marker="s", linestyle="--", label="predicted (BG/NBD)")
        axes.set_xticks(positions, [row.label for row in rows])
        axes.set_xlabel("repeat purchases in the calibration period")
        axes.set_ylabel("mean repeat purchases in the holdout period")
        axes.set_title(title or "Conditional expectations: actual vs predicted")
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format="png")
    finally:
        plt.close(figure)
    return target


def write_report(
    directory: str | Path,
    params: BGNBDParams,
    summary: CustomerSummary,
    command: str,
    gamma_gamma: GammaGammaParams | None = None,
) -> list[HoldoutRow]:
    """Write report.md and conditional_expectations.png into `directory`; return the table's rows."""
    rows = holdout_table(params, summary)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    (target / REPORT_FILE).write_text(render_markdown(rows, params, summary, command, gamma_gamma), encoding="utf-8")
    plot_conditional_expectations(rows, target / PLOT_FILE)
    return rows
