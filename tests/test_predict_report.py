"""The holdout report on CDNOW, through run_fit (as `stream-app fit` runs it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.predict import load_model, run_fit

from .test_predict_cdnow import cdnow_files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _table_rows(report: str) -> list[list[str]]:
    rows = []
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"\d\+?", cells[0]):
            rows.append(cells)
    return rows


def test_cdnow_holdout_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = cdnow_files()["CDNOW_sample.txt"]
    report_dir = tmp_path / "report"
    code = run_fit(sample, "1997-09-30", tmp_path / "model.json", unit="weeks", report_dir=report_dir, holdout_end="1998-06-30")
    out = capsys.readouterr().out
    assert code == 0
    assert "log-likelihood = -9582.4" in out and "s.e." in out

    report = (report_dir / "report.md").read_text()
    rows = _table_rows(report)
    assert [row[0] for row in rows] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    counts = [int(row[1]) for row in rows]
    assert sum(counts) == 2357 and counts[0] == 1411  # 1,411 customers made no repeat purchase in weeks 1-39
    actual = [float(row[2]) for row in rows]
    predicted = [float(row[3]) for row in rows]
    # Fader, Hardie & Lee (2005), figure 4: the model tracks the holdout means, which rise with frequency
    assert actual == sorted(actual) and predicted == sorted(predicted)
    assert predicted[0] == pytest.approx(actual[0], abs=0.05)
    assert predicted[-1] == pytest.approx(actual[-1], rel=0.1)
    assert "stream-app fit --input" in report and "--holdout-end 1998-06-30" in report
    assert "r = 0.2426" in report and "p = 6.2" in report and "39 weeks" in report

    png = (report_dir / "conditional_expectations.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000

    model = load_model(tmp_path / "model.json")
    assert model.bgnbd.n_customers == 2357 and model.gamma_gamma is not None
    assert model.calibration_end.isoformat() == "1997-09-30" and model.unit_days == 7


def test_report_holdout_defaults_to_the_last_transaction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = cdnow_files()["CDNOW_sample.txt"]
    assert run_fit(sample, "1997-09-30", tmp_path / "model.json", report_dir=tmp_path / "r") == 0
    capsys.readouterr()
    report = (tmp_path / "r" / "report.md").read_text()
    assert "to 1998-06-30 (inclusive), 39 weeks" in report  # the sample's last purchase is on 1998-06-30
    assert len(_table_rows(report)) == 8
