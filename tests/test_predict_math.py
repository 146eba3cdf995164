"""The predictive layer's math, summaries, readers, model file and fit command on small hand-made data."""

from __future__ import annotations

import argparse
import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from scipy.special import hyp2f1

from stream_app.predict import (
    BGNBDParams,
    GammaGammaParams,
    InsufficientData,
    ModelFileError,
    TransactionFileError,
    add_fit_arguments,
    conditional_expected_purchases,
    discounted_clv,
    expected_average_spend,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    load_model,
    p_alive,
    read_transactions,
    run_fit,
    save_model,
    summarize_transactions,
)
from stream_app.predict.bgnbd import log_likelihood

CDNOW_PARAMS = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
SPEND_PARAMS = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)


# --- BG/NBD quantities -------------------------------------------------------------------------------


def test_p_alive_is_one_without_repeat_purchases() -> None:
    assert p_alive(CDNOW_PARAMS, 0, 0.0, 30.0) == 1.0
    assert isinstance(p_alive(CDNOW_PARAMS, 0, 0.0, 30.0), float)
    values = p_alive(CDNOW_PARAMS, np.zeros(4), np.zeros(4), np.array([1.0, 10, 39, 100]))
    assert np.array_equal(values, np.ones(4))


def test_p_alive_decreases_with_T_for_a_fixed_history() -> None:
    T = np.array([5.0, 10, 20, 40, 80])
    for x, t_x in [(1, 2.0), (2, 5.0), (10, 4.5)]:
        values = p_alive(CDNOW_PARAMS, x, t_x, T)
        assert np.all((values > 0) & (values <= 1))
        assert np.all(np.diff(values) < 0), (x, t_x, values)
    # a customer seen recently is more likely alive than one with the same x last seen long ago
    assert p_alive(CDNOW_PARAMS, 3, 38.0, 39.0) > p_alive(CDNOW_PARAMS, 3, 5.0, 39.0)


def test_conditional_expectations_are_non_negative_and_grow_with_t() -> None:
    t = np.array([0.0, 0.5, 1, 5, 13, 39, 52, 104])
    for x, t_x, T in [(0, 0.0, 39.0), (1, 10.0, 39.0), (5, 35.0, 38.0), (30, 38.5, 39.0), (2, 1.0, 39.0)]:
        values = conditional_expected_purchases(CDNOW_PARAMS, t, x, t_x, T)
        assert values[0] == 0.0
        assert np.all(values >= 0)
        assert np.all(np.diff(values) > 0), (x, t_x, T, values)
    # vectorised over customers, the same as one at a time
    x, t_x, T = np.array([0, 2, 7]), np.array([0.0, 20.0, 30.0]), np.array([39.0, 39.0, 39.0])
    batch = conditional_expected_purchases(CDNOW_PARAMS, 39.0, x, t_x, T)
    single = [conditional_expected_purchases(CDNOW_PARAMS, 39.0, *row) for row in zip(x, t_x, T)]
    assert np.allclose(batch, single) and all(isinstance(v, float) for v in single)


def test_conditional_expectation_matches_eq10_written_out() -> None:
    """The implementation uses Euler's transformation of 2F1; eq. 10 evaluated literally agrees."""
    r, alpha, a, b = CDNOW_PARAMS.r, CDNOW_PARAMS.alpha, CDNOW_PARAMS.a, CDNOW_PARAMS.b
    for t, x, t_x, T in [(39.0, 0, 0.0, 39.0), (39.0, 2, 30.43, 38.86), (10.0, 5, 20.0, 30.0), (52.0, 12, 37.0, 38.0)]:
        z = t / (alpha + T + t)
        numerator = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
        denominator = 1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        assert conditional_expected_purchases(CDNOW_PARAMS, t, x, t_x, T) == pytest.approx(numerator / denominator, rel=1e-9)
    # eq. 7 is eq. 10 for a customer with no history
    z = 39.0 / (alpha + 39.0)
    literal = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + 39.0)) ** r * hyp2f1(r, b, a + b - 1, z))
    assert expected_purchases(CDNOW_PARAMS, 39.0) == pytest.approx(literal, rel=1e-9)


def test_log_likelihood_matches_eq6_for_one_customer() -> None:
    r, alpha, a, b = CDNOW_PARAMS.r, CDNOW_PARAMS.alpha, CDNOW_PARAMS.a, CDNOW_PARAMS.b
    x, t_x, T = 3, 20.0, 39.0
    a1 = math.gamma(r + x) * alpha**r / math.gamma(r)
    a2 = math.gamma(a + b) * math.gamma(b + x) / (math.gamma(b) * math.gamma(a + b + x))
    a3 = (alpha + T) ** -(r + x)
    a4 = a / (b + x - 1) * (alpha + t_x) ** -(r + x)
    assert log_likelihood(CDNOW_PARAMS, [x], [t_x], [T]) == pytest.approx(math.log(a1 * a2 * (a3 + a4)), rel=1e-12)
    assert log_likelihood(CDNOW_PARAMS, [0], [0.0], [T]) == pytest.approx(math.log((alpha / (alpha + T)) ** r), rel=1e-12)


def test_fit_recovers_simulated_parameters_and_weights_equal_repeats() -> None:
    rng = np.random.default_rng(7)
    true = BGNBDParams(r=0.5, alpha=5.0, a=0.8, b=3.0)
    n, T = 3000, 40.0
    lam = rng.gamma(true.r, 1 / true.alpha, n)
    p = rng.beta(true.a, true.b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):  # BG/NBD story: Poisson purchases, drop out after each with probability p
        now = 0.0
        while True:
            now += rng.exponential(1 / lam[i])
            if now > T:
                break
            x[i] += 1
            t_x[i] = now
            if rng.random() < p[i]:
                break
    fitted = fit_bgnbd(x, t_x, np.full(n, T))
    assert fitted.r == pytest.approx(true.r, rel=0.25)
    assert fitted.alpha == pytest.approx(true.alpha, rel=0.35)
    assert np.sum(x) / n == pytest.approx(float(expected_purchases(fitted, T)), rel=0.05)
    # a weight of 2 is the same as the row twice
    doubled = fit_bgnbd(x[:400], t_x[:400], np.full(400, T), weights=np.full(400, 2.0))
    repeated = fit_bgnbd(np.tile(x[:400], 2), np.tile(t_x[:400], 2), np.full(800, T))
    assert doubled.r == pytest.approx(repeated.r, rel=1e-4)
    assert doubled.log_likelihood == pytest.approx(repeated.log_likelihood, rel=1e-8)


def test_insufficient_data_is_refused_with_the_counts() -> None:
    x = np.array([0, 0, 1, 2, 0, 3])
    with pytest.raises(InsufficientData, match=r"at least 10 customers.*3 of 6"):
        fit_bgnbd(x, np.array([0, 0, 2.0, 3.0, 0, 4.0]), np.full(6, 5.0))
    with pytest.raises(InsufficientData, match=r"at least 10 customers.*3 of 6"):
        fit_gamma_gamma(x, np.array([0, 0, 10.0, 20.0, 0, 15.0]))
    # 50 identical clockwork buyers: enough repeat buyers, but no maximum (r and alpha run off together)
    with pytest.raises(InsufficientData, match="no well-defined maximum"):
        fit_bgnbd(np.full(50, 10), np.full(50, 39.0), np.full(50, 39.0))


def test_bad_summaries_are_refused() -> None:
    with pytest.raises(ValueError, match="t_x <= T"):
        fit_bgnbd([1], [6.0], [5.0])
    with pytest.raises(ValueError, match="whole numbers"):
        fit_bgnbd([1.5], [1.0], [5.0])


# --- spend and value ---------------------------------------------------------------------------------


def test_expected_average_spend() -> None:
    population = SPEND_PARAMS.p * SPEND_PARAMS.gamma / (SPEND_PARAMS.q - 1)
    assert expected_average_spend(SPEND_PARAMS, 0, 0.0) == pytest.approx(population)
    assert expected_average_spend(SPEND_PARAMS, 0, 99.0) == pytest.approx(population)  # no repeat spend seen
    values = expected_average_spend(SPEND_PARAMS, np.array([1, 5, 50, 5000]), np.full(4, 80.0))
    assert np.all(np.diff(values) > 0) and values[-1] == pytest.approx(80.0, rel=0.01)  # shrinks to own mean
    with pytest.raises(ValueError, match="q <= 1"):
        expected_average_spend(GammaGammaParams(p=1, q=0.9, gamma=1), 1, 10.0)


def test_discounted_clv_telescopes_without_discount_and_shrinks_with_it() -> None:
    args = (np.array([0, 2, 6]), np.array([0.0, 30.43, 36.0]), np.full(3, 38.86), np.array([0.0, 22.35, 40.0]))
    plain = discounted_clv(CDNOW_PARAMS, SPEND_PARAMS, *args, horizon_units=52, discount_rate_per_unit=0.0)
    expected = conditional_expected_purchases(CDNOW_PARAMS, 52.0, *args[:3]) * expected_average_spend(SPEND_PARAMS, args[0], args[3])
    assert np.allclose(plain, expected)
    discounted = discounted_clv(CDNOW_PARAMS, SPEND_PARAMS, *args, horizon_units=52, discount_rate_per_unit=0.003)
    assert np.all(discounted < plain) and np.all(discounted > 0)
    assert discounted_clv(CDNOW_PARAMS, SPEND_PARAMS, 1, 5.0, 10.0, 20.0, horizon_units=0, discount_rate_per_unit=0.01) == 0.0


# --- summaries ---------------------------------------------------------------------------------------


def test_summary_rules_on_a_hand_made_example() -> None:
    d = date
    transactions = [
        ("ann", d(2024, 1, 1), 10.0),
        ("ann", d(2024, 1, 1), 5.0),  # same day: one purchase day of 15
        ("ann", d(2024, 1, 8), 20.0),
        ("ann", d(2024, 1, 8), 4.0),  # same day: 24
        ("ann", d(2024, 1, 29), 30.0),  # on the calibration end: counts in calibration
        ("ann", d(2024, 2, 5), 1.0),  # holdout
        ("ann", d(2024, 2, 5), 1.0),  # holdout, same day: still one purchase day
        ("ann", d(2024, 2, 12), 1.0),  # holdout end: counts
        ("ann", d(2024, 2, 13), 1.0),  # after the holdout: ignored
        ("bob", d(2024, 1, 15), 50.0),  # one purchase only
        ("cat", d(2024, 2, 1), 9.0),  # first purchase after calibration: excluded
        ("dan", d(2024, 1, 22), 7.0),
        ("dan", d(2024, 2, 10), 3.0),  # only in the holdout
    ]
    s = summarize_transactions(transactions, d(2024, 1, 29), "weeks", holdout_end=d(2024, 2, 12))
    assert list(s.ids) == ["ann", "bob", "dan"]
    assert list(s.x) == [2, 0, 0]
    assert s.t_x.tolist() == pytest.approx([4.0, 0.0, 0.0])  # 28 days / 7
    assert s.T.tolist() == pytest.approx([4.0, 2.0, 1.0])  # from each customer's first purchase
    assert s.monetary.tolist() == pytest.approx([(24.0 + 30.0) / 2, 0.0, 0.0])  # first day left out
    assert list(s.x_holdout) == [2, 0, 1]
    assert s.holdout_length == pytest.approx(2.0)
    days = summarize_transactions(transactions, d(2024, 1, 29), "days")
    assert days.t_x[0] == 28.0 and days.T.tolist() == [28.0, 14.0, 7.0]
    assert days.x_holdout is None and days.holdout_length is None
    with pytest.raises(ValueError, match="after the calibration end"):
        summarize_transactions(transactions, d(2024, 1, 29), holdout_end=d(2024, 1, 29))
    with pytest.raises(ValueError, match="unit 'months'"):
        summarize_transactions(transactions, d(2024, 1, 29), "months")


# --- readers -----------------------------------------------------------------------------------------


def test_readers_read_the_three_formats(tmp_path: Path) -> None:
    csv_file = tmp_path / "orders.csv"
    csv_file.write_text("id,date,revenue,other\nu1,2024-01-02,10.5,x\nu1,20240105,2,y\n\nu2,2024-01-03,7,z\n")
    assert read_transactions(csv_file) == [("u1", date(2024, 1, 2), 10.5), ("u1", date(2024, 1, 5), 2.0), ("u2", date(2024, 1, 3), 7.0)]
    events = tmp_path / "events.jsonl"
    lines = [
        {"type": "track", "event": "Order Completed", "userId": "u1", "timestamp": "2024-01-02T23:30:00-02:00", "properties": {"revenue": 12}},
        {"type": "track", "event": "Product Viewed", "userId": "u1", "timestamp": "2024-01-02T10:00:00Z"},
        {"type": "page", "anonymousId": "a9", "timestamp": "2024-01-02T10:00:00Z"},
        {"type": "track", "event": "Order Completed", "anonymousId": "a9", "timestamp": 1704067200000, "properties": {"total": 8.5}},
        {"type": "track", "event": "Order Completed", "userId": "u2", "timestamp": "2024-01-05T00:00:00Z"},
    ]
    events.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert read_transactions(events) == [("u1", date(2024, 1, 3), 12.0), ("a9", date(2024, 1, 1), 8.5), ("u2", date(2024, 1, 5), 0.0)]
    cdnow = tmp_path / "cdnow.txt"
    cdnow.write_text(" 00004 0001 19970101  2   29.33\r\n 00004 0001 19970118  2   29.73\r\n")
    assert read_transactions(cdnow) == [("0001", date(1997, 1, 1), 29.33), ("0001", date(1997, 1, 18), 29.73)]
    master = tmp_path / "master.txt"
    master.write_text(" customer_id  date number_of_cds  dollar_value\n 00002 19970112  1   12.00\n")
    assert read_transactions(master) == [("00002", date(1997, 1, 12), 12.0)]


@pytest.mark.parametrize(
    ("name", "text", "line", "expected"),
    [
        ("bad.csv", "customer_id,date,amount\nu1,2024-01-02,3\nu2,2024/01/02,3\n", 3, "YYYY-MM-DD or YYYYMMDD"),
        ("bad2.csv", "customer_id,date,amount\nu1,2024-01-02,lots\n", 2, "the amount as a number"),
        ("head.csv", "user,date,amount\nu1,2024-01-02,3\n", 1, "customer column named customer_id or id"),
        ("bad.jsonl", '{"type": "identify", "userId": "u"}\n{not json\n', 2, "one JSON object per line"),
        ("who.jsonl", '{"type": "track", "event": "Order Completed", "timestamp": "2024-01-02T00:00:00Z"}\n', 1, "userId or anonymousId"),
        ("when.jsonl", '\n{"type": "track", "event": "Order Completed", "userId": "u", "timestamp": "yesterday"}\n', 2, "ISO-8601"),
        ("bad.txt", " 00004 0001 19970101  2   29.33\n 00004 0001 19970101  2\n", 2, "5 whitespace-separated columns"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path: Path, name: str, text: str, line: int, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TransactionFileError) as caught:
        read_transactions(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


# --- model file --------------------------------------------------------------------------------------


def _fitted() -> tuple[BGNBDParams, GammaGammaParams]:
    bg = BGNBDParams(r=0.24, alpha=4.4, a=0.79, b=2.4, log_likelihood=-9582.4, std_errors={"r": 0.01, "alpha": 0.3, "a": 0.2, "b": math.nan}, n_customers=2357, n_repeat_customers=946)
    gg = GammaGammaParams(p=6.25, q=3.74, gamma=15.44, log_likelihood=-4055.9, std_errors={"p": 1.2, "q": 0.3, "gamma": 4.2}, n_customers=946)
    return bg, gg


def test_model_file_round_trip(tmp_path: Path) -> None:
    bg, gg = _fitted()
    path = tmp_path / "models" / "model.json"
    saved = save_model(path, bg, gg, "weeks", date(1997, 9, 30))
    document = json.loads(path.read_text())
    assert document["format"] == "stream-app-predictive-model" and document["version"] == 1
    assert document["unit_days"] == 7 and document["calibration_end"] == "1997-09-30"
    assert document["bgnbd"]["std_errors"]["b"] is None  # NaN is not JSON
    loaded = load_model(path)
    assert loaded.bgnbd.r == bg.r and loaded.bgnbd.n_repeat_customers == 946 and math.isnan(loaded.bgnbd.std_errors["b"])
    assert loaded.gamma_gamma == gg
    assert loaded.unit == "weeks" and loaded.calibration_end == date(1997, 9, 30)
    assert loaded.model_version == saved.model_version == document["model_version"] and len(loaded.model_version) == 12
    # without a spend model
    save_model(path, bg, None, "days", date(1997, 9, 30))
    no_spend = load_model(path)
    assert no_spend.gamma_gamma is None and no_spend.unit_days == 1 and no_spend.model_version != saved.model_version


def test_model_file_refuses_newer_versions_and_other_files(tmp_path: Path) -> None:
    bg, gg = _fitted()
    path = tmp_path / "model.json"
    save_model(path, bg, gg, "weeks", date(1997, 9, 30))
    document = json.loads(path.read_text())
    document["version"] = 2
    path.write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match=r"version 2 is newer than this stream-app reads \(up to 1\)"):
        load_model(path)
    path.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ModelFileError, match="not a stream-app predictive model"):
        load_model(path)
    path.write_text("{broken")
    with pytest.raises(ModelFileError, match="expected a JSON model file"):
        load_model(path)


# --- the fit command ---------------------------------------------------------------------------------


def test_fit_command_refuses_thin_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thin = tmp_path / "thin.csv"
    thin.write_text("customer_id,date,amount\n" + "".join(f"c{i},2024-01-0{1 + i % 3},5\n" for i in range(6)) + "c0,2024-01-09,5\n")
    assert run_fit(thin, "2024-02-01", tmp_path / "m.json") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "1 of 6 customers" in error and "\n" not in error
    assert not (tmp_path / "m.json").exists()
    assert run_fit(tmp_path / "missing.csv", "2024-02-01", tmp_path / "m.json") == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert run_fit(thin, "Feb 1st", tmp_path / "m.json") == 2
    assert "--calibration-end" in capsys.readouterr().err


def test_add_fit_arguments_registers_the_subcommand(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="stream-app")
    add_fit_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fit", "--input", str(tmp_path / "none.csv"), "--calibration-end", "2024-01-31", "--output", "m.json", "--unit", "days"])
    assert (args.unit, args.report, args.holdout_end) == ("days", None, None)
    assert args.func(args) == 2  # the input does not exist
