"""`stream-app fit`: fit the BG/NBD and Gamma-Gamma models on a transactions file and save the model.

    stream-app fit --input FILE --calibration-end DATE --output model.json
                   [--unit days|weeks] [--report DIR] [--holdout-end DATE]

Only purchases up to and including the calibration end are used for fitting. With --report (or
--holdout-end) the purchases after it, up to the holdout end (default: the last transaction date), are
set against the model's predictions. Bad input and data too thin to fit exit with code 2 and a one-line
error on stderr.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Any

from .bgnbd import BGNBDParams, InsufficientData, fit_bgnbd
from .gamma_gamma import GammaGammaParams, fit_gamma_gamma
from .model_file import save_model
from .readers import TransactionFileError, parse_date, read_transactions
from .report import holdout_table, write_report
from .summary import UNITS, summarize_transactions


class _Refused(Exception):
    """A one-line reason to stop with exit code 2."""


def _date(value: str | date, option: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return parse_date(value)
    except ValueError as exc:
        raise _Refused(f"{option}: {exc}") from None


def _estimates(values: dict[str, float], errors: dict[str, float]) -> str:
    return "  ".join(f"{name} = {value:.4f} (s.e. {errors.get(name, float('nan')):.4f})" for name, value in values.items())


def _print_fit(bgnbd: BGNBDParams, gamma_gamma: GammaGammaParams | None) -> None:
    values = {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b}
    print(f"BG/NBD       {_estimates(values, bgnbd.std_errors)}  log-likelihood = {bgnbd.log_likelihood:.2f}")
    if gamma_gamma is not None:
        values = {"p": gamma_gamma.p, "q": gamma_gamma.q, "gamma": gamma_gamma.gamma}
        print(
            f"Gamma-Gamma  {_estimates(values, gamma_gamma.std_errors)}  log-likelihood = {gamma_gamma.log_likelihood:.2f}"
            f"  ({gamma_gamma.n_customers} repeat customers)"
        )


def _command_line(input_path: Any, calibration_end: Any, output_path: Any, unit: str, report_dir: Any, holdout_end: Any) -> str:
    words = ["stream-app", "fit", "--input", str(input_path), "--calibration-end", str(calibration_end), "--output", str(output_path), "--unit", unit]
    if report_dir is not None:
        words += ["--report", str(report_dir)]
    if holdout_end is not None:
        words += ["--holdout-end", str(holdout_end)]
    return " ".join(shlex.quote(word) for word in words)


def run_fit(
    input_path: str | Path,
    calibration_end: str | date,
    output_path: str | Path,
    unit: str = "weeks",
    report_dir: str | Path | None = None,
    holdout_end: str | date | None = None,
    clv_horizon_days: int = 365,
    annual_discount_rate: float = 0.10,
) -> int:
    """Fit, print the parameters, save the model (and the holdout report); 0 on success, 2 when refused."""
    try:
        return _run(input_path, calibration_end, output_path, unit, report_dir, holdout_end, clv_horizon_days, annual_discount_rate)
    except (_Refused, TransactionFileError, InsufficientData) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(
    input_path: str | Path,
    calibration_end_arg: str | date,
    output_path: str | Path,
    unit: str,
    report_dir: str | Path | None,
    holdout_end_arg: str | date | None,
    clv_horizon_days: int = 365,
    annual_discount_rate: float = 0.10,
) -> int:
    if unit not in UNITS:
        raise _Refused(f"--unit: expected one of {', '.join(UNITS)}, got {unit!r}")
    calibration_end = _date(calibration_end_arg, "--calibration-end")
    holdout_end = None if holdout_end_arg is None else _date(holdout_end_arg, "--holdout-end")
    transactions = read_transactions(input_path)
    if not transactions:
        raise _Refused(f"{input_path}: no purchase transactions in the file")
    if report_dir is not None and holdout_end is None:
        holdout_end = max(t.date for t in transactions)
        if holdout_end <= calibration_end:
            raise _Refused(
                f"--report needs purchases after --calibration-end {calibration_end.isoformat()}; "
                f"the last transaction is on {holdout_end.isoformat()} (or pass --holdout-end)"
            )
    if holdout_end is not None and holdout_end <= calibration_end:
        raise _Refused(f"--holdout-end {holdout_end.isoformat()} must be after --calibration-end {calibration_end.isoformat()}")

    summary = summarize_transactions(transactions, calibration_end, unit, holdout_end)
    if summary.n_customers == 0:
        raise _Refused(f"{input_path}: no customer made a purchase on or before {calibration_end.isoformat()}")
    print(
        f"fit: {len(transactions)} transactions from {input_path}; {summary.n_customers} customers, "
        f"{summary.n_repeat_customers} with repeat purchases, up to {calibration_end.isoformat()}; unit: {unit}"
    )
    bgnbd = fit_bgnbd(summary.x, summary.t_x, summary.T)
    try:
        gamma_gamma: GammaGammaParams | None = fit_gamma_gamma(summary.x, summary.monetary)
    except InsufficientData as exc:
        print(f"warning: no spend model, the file is saved with gamma_gamma null: {exc}", file=sys.stderr)
        gamma_gamma = None
    _print_fit(bgnbd, gamma_gamma)
    clv = None
    if gamma_gamma is not None:
        clv = _clv_section(bgnbd, gamma_gamma, summary, unit, clv_horizon_days, annual_discount_rate)
        print(f"CLV over {clv_horizon_days} days at {annual_discount_rate:.0%} a year: median {clv['percentiles'][50]:.2f}, "
              f"top 10% from {clv['percentiles'][90]:.2f}")
    model = save_model(output_path, bgnbd, gamma_gamma, unit, calibration_end, clv=clv)
    print(f"model -> {output_path} (model_version {model.model_version})")

    if holdout_end is not None:
        command = _command_line(input_path, calibration_end_arg, output_path, unit, report_dir, holdout_end_arg)
        if report_dir is not None:
            rows = write_report(report_dir, bgnbd, summary, command, gamma_gamma)
            print(f"report -> {Path(report_dir) / 'report.md'}, {Path(report_dir) / 'conditional_expectations.png'}")
        else:
            rows = holdout_table(bgnbd, summary)
        print(
            f"holdout {calibration_end.isoformat()} (exclusive) to {holdout_end.isoformat()} "
            f"({summary.holdout_length:.4g} {unit}): mean repeat purchases by calibration repeat purchases"
        )
        print(f"{'x':>4} {'customers':>10} {'actual':>8} {'predicted':>10}")
        for row in rows:
            print(f"{row.label:>4} {row.n_customers:>10} {row.actual:>8.3f} {row.predicted:>10.3f}")
    return 0


def _clv_section(bgnbd: BGNBDParams, gamma_gamma: GammaGammaParams, summary: Any, unit: str,
                 horizon_days: int, annual_discount_rate: float) -> dict[str, Any]:
    """Percentiles of the fitted customers' discounted CLV at the calibration end (for top-share cut-offs)."""
    import numpy as np

    from .gamma_gamma import discounted_clv
    from .summary import unit_days

    days = unit_days(unit)
    horizon_units = max(1, round(horizon_days / days))
    rate = (1 + annual_discount_rate) ** (days / 365) - 1
    values = np.asarray(discounted_clv(bgnbd, gamma_gamma, summary.x, summary.t_x, summary.T, summary.monetary, horizon_units, rate))
    percentiles = np.percentile(values, np.arange(101))
    return {"horizon_days": horizon_days, "annual_discount_rate": annual_discount_rate,
            "percentiles": [round(float(v), 6) for v in percentiles]}


def _from_args(args: argparse.Namespace) -> int:
    return run_fit(args.input, args.calibration_end, args.output, args.unit, args.report, args.holdout_end,
                   args.clv_horizon_days, args.annual_discount_rate)


def add_fit_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Register `fit` on an argparse sub-parsers object; its func takes the Namespace, returns the exit code."""
    parser = subparsers.add_parser(
        "fit",
        help="fit the BG/NBD + Gamma-Gamma predictive model on a transactions file",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    parser.add_argument("--input", required=True, help="transactions: .csv, .jsonl/.json (Segment events) or CDNOW text")
    parser.add_argument("--calibration-end", required=True, help="last day of the calibration period, YYYY-MM-DD (inclusive)")
    parser.add_argument("--output", required=True, help="where to write the model JSON")
    parser.add_argument("--unit", choices=sorted(UNITS), default="weeks", help="time unit of the model (default: weeks)")
    parser.add_argument("--report", help="write the holdout report (report.md, conditional_expectations.png) here")
    parser.add_argument("--holdout-end", help="last day of the holdout period (default with --report: the last transaction date)")
    parser.add_argument("--clv-horizon-days", type=int, default=365, help="horizon of the discounted CLV (default 365)")
    parser.add_argument("--annual-discount-rate", type=float, default=0.10, help="CLV discount rate per year (default 0.10)")
    parser.set_defaults(func=_from_args)
    return parser
