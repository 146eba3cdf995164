"""The fitted predictive model as a versioned JSON file.

    {"format": "stream-app-predictive-model", "version": 1, "fitted_at": "2026-11-29T10:00:00Z",
     "unit": "weeks", "unit_days": 7, "calibration_end": "1997-09-30",
     "bgnbd": {"r": .., "alpha": .., "a": .., "b": .., "log_likelihood": .., "std_errors": {..},
               "n_customers": .., "n_repeat_customers": ..},
     "gamma_gamma": {"p": .., "q": .., "gamma": .., "log_likelihood": .., "std_errors": {..},
                     "n_customers": ..} or null,
     "clv": {"horizon_days": 365, "annual_discount_rate": 0.1, "percentiles": [101 values]} (optional),
     "model_version": "<12 hex digits: sha256 of the parameters>"}

`clv.percentiles` are the 0th..100th percentiles of the discounted CLV of the customers the model was
fitted on, at the calibration end: the stream's `high_predicted_value` cut-off for any top share.

A standard error that could not be computed is written as null and read back as NaN.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from .bgnbd import BGNBDParams
from .gamma_gamma import GammaGammaParams
from .summary import unit_days

FORMAT = "stream-app-predictive-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class PredictiveModel:
    unit: str
    unit_days: int
    calibration_end: date
    fitted_at: str
    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams | None
    model_version: str
    clv_horizon_days: int = 365
    annual_discount_rate: float = 0.10
    clv_percentiles: tuple[float, ...] = ()

    @property
    def clv_horizon_units(self) -> int:
        return max(1, round(self.clv_horizon_days / self.unit_days))

    @property
    def discount_rate_per_unit(self) -> float:
        return (1 + self.annual_discount_rate) ** (self.unit_days / 365) - 1

    def clv_threshold(self, top_share: float) -> float | None:
        """The CLV at which a customer enters the top ``top_share`` of the fitted population."""
        points = self.clv_percentiles
        if len(points) != 101 or not 0 < top_share < 1:
            return None
        position = 100 * (1 - top_share)
        low = int(position)
        high = min(low + 1, 100)
        return points[low] + (points[high] - points[low]) * (position - low)


def model_version(bgnbd: BGNBDParams, gamma_gamma: GammaGammaParams | None, unit: str) -> str:
    """A short, stable hash of the parameters (and their time unit): 12 hex digits of sha256."""
    parts: dict[str, Any] = {"unit_days": unit_days(unit), "r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b}
    if gamma_gamma is not None:
        parts.update(p=gamma_gamma.p, q=gamma_gamma.q, gamma=gamma_gamma.gamma)
    canonical = json.dumps({k: (repr(float(v)) if k != "unit_days" else v) for k, v in parts.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _errors(errors: dict[str, float]) -> dict[str, float | None]:
    return {name: _number(value) for name, value in errors.items()}


def save_model(
    path: str | Path,
    bgnbd: BGNBDParams,
    gamma_gamma: GammaGammaParams | None,
    unit: str,
    calibration_end: date,
    fitted_at: datetime | None = None,
    clv: dict[str, Any] | None = None,
) -> PredictiveModel:
    """Write the model file (creating its directory) and return the model as it will load."""
    stamp = (fitted_at or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = model_version(bgnbd, gamma_gamma, unit)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "fitted_at": stamp,
        "unit": unit,
        "unit_days": unit_days(unit),
        "calibration_end": calibration_end.isoformat(),
        "bgnbd": {
            "r": bgnbd.r,
            "alpha": bgnbd.alpha,
            "a": bgnbd.a,
            "b": bgnbd.b,
            "log_likelihood": _number(bgnbd.log_likelihood),
            "std_errors": _errors(bgnbd.std_errors),
            "n_customers": bgnbd.n_customers,
            "n_repeat_customers": bgnbd.n_repeat_customers,
        },
        "gamma_gamma": None
        if gamma_gamma is None
        else {
            "p": gamma_gamma.p,
            "q": gamma_gamma.q,
            "gamma": gamma_gamma.gamma,
            "log_likelihood": _number(gamma_gamma.log_likelihood),
            "std_errors": _errors(gamma_gamma.std_errors),
            "n_customers": gamma_gamma.n_customers,
        },
        "clv": clv,
        "model_version": version,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return PredictiveModel(unit, unit_days(unit), calibration_end, stamp, bgnbd, gamma_gamma, version, *_clv_fields(clv))


def _clv_fields(clv: Any) -> tuple[int, float, tuple[float, ...]]:
    if not isinstance(clv, dict):
        return 365, 0.10, ()
    percentiles = tuple(float(v) for v in clv.get("percentiles") or ())
    return int(clv.get("horizon_days", 365)), float(clv.get("annual_discount_rate", 0.10)), percentiles


def _read_errors(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): math.nan if v is None else float(v) for k, v in raw.items()}


def _positive(section: dict[str, Any], name: str, where: str) -> float:
    value = section.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelFileError(f"{where}: expected {name} to be a positive number, got {value!r}")
    return float(value)


def load_model(path: str | Path) -> PredictiveModel:
    """Read a model file written by save_model. Raises ModelFileError for a file that is not a model,
    a model written by a newer version of stream-app, or a damaged one."""
    source = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{source}: no such model file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{source}: expected a JSON model file: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ModelFileError(f"{source}: expected format {FORMAT!r}, got {found!r}; this is not a stream-app predictive model")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{source}: expected an integer version >= 1, got {version!r}")
    if version > VERSION:
        raise ModelFileError(
            f"{source}: model file version {version} is newer than this stream-app reads (up to {VERSION}); upgrade stream-app"
        )
    try:
        unit = document["unit"]
        days = unit_days(unit)
        calibration_end = date.fromisoformat(document["calibration_end"])
        raw = document["bgnbd"]
        bgnbd = BGNBDParams(
            r=_positive(raw, "r", f"{source}: bgnbd"),
            alpha=_positive(raw, "alpha", f"{source}: bgnbd"),
            a=_positive(raw, "a", f"{source}: bgnbd"),
            b=_positive(raw, "b", f"{source}: bgnbd"),
            log_likelihood=math.nan if raw.get("log_likelihood") is None else float(raw["log_likelihood"]),
            std_errors=_read_errors(raw.get("std_errors")),
            n_customers=int(raw.get("n_customers", 0)),
            n_repeat_customers=int(raw.get("n_repeat_customers", 0)),
        )
        gg_raw = document.get("gamma_gamma")
        gamma_gamma = None
        if gg_raw is not None:
            gamma_gamma = GammaGammaParams(
                p=_positive(gg_raw, "p", f"{source}: gamma_gamma"),
                q=_positive(gg_raw, "q", f"{source}: gamma_gamma"),
                gamma=_positive(gg_raw, "gamma", f"{source}: gamma_gamma"),
                log_likelihood=math.nan if gg_raw.get("log_likelihood") is None else float(gg_raw["log_likelihood"]),
                std_errors=_read_errors(gg_raw.get("std_errors")),
                n_customers=int(gg_raw.get("n_customers", 0)),
            )
        fitted_at = str(document.get("fitted_at", ""))
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{source}: damaged model file ({type(exc).__name__}: {exc})") from None
    if days != document.get("unit_days", days):
        raise ModelFileError(f"{source}: unit {unit!r} is {days} days, but unit_days says {document.get('unit_days')!r}")
    version_hash = model_version(bgnbd, gamma_gamma, unit)
    if document.get("model_version", version_hash) != version_hash:
        raise ModelFileError(
            f"{source}: model_version {document.get('model_version')!r} does not match the parameters "
            f"(expected {version_hash!r}); the file was edited after fitting: fit again"
        )
    try:
        clv_fields = _clv_fields(document.get("clv"))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: damaged clv section ({exc})") from None
    if clv_fields[2] and len(clv_fields[2]) != 101:
        raise ModelFileError(f"{source}: clv.percentiles must have 101 values, got {len(clv_fields[2])}")
    return PredictiveModel(unit, days, calibration_end, fitted_at, bgnbd, gamma_gamma, version_hash, *clv_fields)
