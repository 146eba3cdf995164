"""Load segment definitions from YAML into a :class:`CatalogConfig`, safely.

No `eval`: the file is composed into YAML nodes and checked against a fixed shape. Every error names
the file, line and column and says what was expected, e.g.
``segments.yaml:14:15: high_intent.threshold: expected a number, got 'six'``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..resources import package_file
from ..timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from .config import CatalogConfig

DEFAULTS_FILE = package_file("segments", "defaults.yaml")
_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
MAX_WINDOW_MS = 365 * DAY_MS


class DefinitionError(ValueError):
    def __init__(self, path: str, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        column = node.start_mark.column + 1 if node is not None else 1
        super().__init__(f"{path}:{line}:{column}: {message}")
        self.path, self.line, self.column = path, line, column


@dataclass(frozen=True)
class _Field:
    attr: str  # CatalogConfig attribute
    kind: str  # duration | int | number | text | optional_text | bool | share | weights | text_list


_SHAPE: dict[str, Any] = {
    "version": _Field("version", "text"),
    "time": {
        "lateness_allowance": _Field("lateness_ms", "duration"),
        "dedup_window": _Field("dedup_window_ms", "duration"),
        "dormant_after": _Field("dormant_after_ms", "duration"),
        "historical_after": _Field("historical_after_ms", "duration"),
        "backfill_age": _Field("backfill_age_ms", "duration"),
        "backfill_drained_after": _Field("backfill_drained_after_ms", "duration"),
    },
    "lifecycle": {
        "activation_event": _Field("activation_event", "text"),
        "activation_feature": _Field("activation_feature", "optional_text"),
        "churned_after_inactive": _Field("churn_inactive_ms", "window"),
        "engaged": {"window": _Field("engaged_window_ms", "window"), "min_active_days": _Field("engaged_min_days", "int")},
        "loyal_advocate": {
            "orders_window": _Field("loyal_orders_window_ms", "window"),
            "min_orders": _Field("loyal_min_orders", "int"),
            "invite_window": _Field("loyal_invite_window_ms", "window"),
            "nps_window": _Field("loyal_nps_window_ms", "window"),
            "nps_min_score": _Field("loyal_nps_min_score", "number"),
        },
    },
    "high_intent": {
        "window": _Field("intent_window_ms", "window"),
        "threshold": _Field("intent_threshold", "number"),
        "weights": _Field("intent_weights", "weights"),
    },
    "engagement": {
        "half_life": _Field("engagement_half_life_ms", "window"),
        "highly_engaged": _Field("engagement_high", "number"),
        "moderately_engaged": _Field("engagement_moderate", "number"),
        "weights": _Field("engagement_weights", "weights"),
    },
    "price_sensitive": {
        "window": _Field("price_sensitive_window_ms", "window"),
        "min_orders": _Field("price_sensitive_min_orders", "int"),
        "min_discounted_share": _Field("price_sensitive_min_share", "share"),
    },
    "promo_responsive": {
        "window": _Field("promo_window_ms", "window"),
        "order_within": _Field("promo_order_within_ms", "window"),
    },
    "power_user": {
        "window": _Field("power_user_window_ms", "window"),
        "min_uses": _Field("power_user_min_uses", "int"),
        "metric_features": _Field("power_user_metric_features", "text_list"),
    },
    "nearing_usage_limit": {"ratio": _Field("usage_limit_ratio", "share")},
    "trial_not_activated": {
        "key_feature": _Field("key_feature", "optional_text"),
        "grace": _Field("trial_grace_ms", "window"),
    },
    "stuck_in_onboarding": {
        "last_step": _Field("onboarding_last_step", "optional_int"),
        "stall": _Field("onboarding_stall_ms", "window"),
    },
    "churn_risk": {
        "recent_window": _Field("churn_risk_recent_ms", "window"),
        "prior_window": _Field("churn_risk_prior_ms", "window"),
        "divisor": _Field("churn_risk_divisor", "int"),
        "engaged_within": _Field("churn_risk_engaged_within_ms", "window"),
    },
    "cart_abandoner": {
        "abandon_after": _Field("cart_abandon_after_ms", "duration"),
        "expire_after": _Field("cart_expiry_ms", "window"),
    },
    "predicted_churn": {
        "enabled": _Field("predicted_churn_enabled", "bool"),
        "min_orders": _Field("predicted_churn_min_orders", "int"),
        "p_alive_below": _Field("predicted_churn_p_alive_below", "share"),
    },
    "rfm": {
        "enabled": _Field("rfm_enabled", "bool"),
        "window": _Field("rfm_window_ms", "window"),
        "refresh_interval": _Field("rfm_refresh_ms", "duration"),
        "segments": _Field("rfm_rules", "rfm_rules"),
    },
    "custom_segments": _Field("custom", "custom"),
    "high_predicted_value": {
        "enabled": _Field("high_value_enabled", "bool"),
        "top_share": _Field("high_value_top_share", "share"),
    },
}


def parse_duration(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 30m, 7d or 500ms, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


_SCORE_RANGE = re.compile(r"^\s*(?:(\d)\s*\.\.\s*(\d)|(>=|<=|==)?\s*(\d))\s*$")


def parse_score_range(text: str) -> tuple[int, int]:
    """A score condition: 4, ==4, >=4, <=2 or 2..3 (scores are 1..5)."""
    match = _SCORE_RANGE.match(text)
    if not match:
        raise ValueError(f"expected a score condition such as 4, >=4, <=2 or 2..3, got {text!r}")
    low, high, op, single = match.groups()
    if low is not None:
        bounds = (int(low), int(high))
    else:
        value = int(single)
        bounds = {">=": (value, 5), "<=": (1, value)}.get(op or "==", (value, value))
    if not 1 <= bounds[0] <= bounds[1] <= 5:
        raise ValueError(f"expected scores between 1 and 5 with low <= high, got {text!r}")
    return bounds


def _rfm_rules(path: str, where: str, node: yaml.Node) -> tuple[tuple[str, int, int, int, int], ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise DefinitionError(path, node, f"{where}: expected a list of {{name, r, fm}} rules, first match wins")
    rules = []
    for index, item in enumerate(node.value):
        here = f"{where}[{index}]"
        if not isinstance(item, yaml.MappingNode):
            raise DefinitionError(path, item, f"{here}: expected a mapping with keys name, r, fm")
        fields = {str(k.value): v for k, v in item.value}
        for key_node, _ in item.value:
            if key_node.value not in ("name", "r", "fm"):
                raise DefinitionError(path, key_node, f"{here}.{key_node.value}: unknown key; expected name, r, fm")
        missing = [k for k in ("name", "r", "fm") if k not in fields]
        if missing:
            raise DefinitionError(path, item, f"{here}: missing {', '.join(missing)}")
        name = _scalar(fields["name"])
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise DefinitionError(path, fields["name"], f"{here}.name: expected a lower-case identifier, got {fields['name'].value!r}")
        bounds = []
        for key in ("r", "fm"):
            try:
                bounds.extend(parse_score_range(str(fields[key].value)))
            except ValueError as exc:
                raise DefinitionError(path, fields[key], f"{here}.{key}: {exc}") from None
        rules.append((name, *bounds))
    return tuple(rules)


def _scalar(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None


def _convert(path: str, where: str, field: _Field, node: yaml.Node) -> Any:
    def fail(expected: str) -> DefinitionError:
        shown = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
        return DefinitionError(path, node, f"{where}: expected {expected}, got {shown!r}")

    if field.kind == "custom":
        from .catalog import BUILT_IN_IDS
        from .custom_definitions import compile_custom_segments

        return compile_custom_segments(path, node, DefinitionError, _scalar, parse_duration, MAX_WINDOW_MS, set(BUILT_IN_IDS))
    if field.kind == "rfm_rules":
        return _rfm_rules(path, where, node)
    if field.kind == "weights":
        if not isinstance(node, yaml.MappingNode):
            raise fail("a mapping of event name to weight")
        weights = {}
        for key_node, value_node in node.value:
            value = _scalar(value_node)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DefinitionError(path, value_node, f"{where}.{key_node.value}: expected a number, got {value_node.value!r}")
            weights[str(key_node.value)] = float(value)
        return weights
    if field.kind == "text_list":
        if not isinstance(node, yaml.SequenceNode) or not all(isinstance(item, yaml.ScalarNode) and item.value for item in node.value):
            raise fail("a list of names, e.g. [export, dashboards]")
        return tuple(str(item.value) for item in node.value)
    if not isinstance(node, yaml.ScalarNode):
        raise fail("a single value")
    value = _scalar(node)
    if field.kind in ("duration", "window"):
        try:
            millis = parse_duration(str(node.value))
        except ValueError as exc:
            raise DefinitionError(path, node, f"{where}: {exc}") from None
        if field.kind == "window" and not 0 < millis <= MAX_WINDOW_MS:
            raise fail("a window between 1ms and 365d")
        return millis
    if field.kind == "optional_int" and value is None:
        return None
    if field.kind in ("int", "optional_int"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail("a whole number >= 0")
        return value
    if field.kind in ("number", "share"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if field.kind == "share" and not 0 < value < 1:
            raise fail("a number between 0 and 1")
        return float(value)
    if field.kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if field.kind == "optional_text" and value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail("a non-empty text")
    return value


def _walk(path: str, node: yaml.Node, shape: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    if not isinstance(node, yaml.MappingNode):
        raise DefinitionError(path, node, f"{prefix or 'the file'}: expected a mapping with keys {', '.join(shape)}")
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = str(key_node.value)
        where = f"{prefix}.{key}" if prefix else key
        if key in seen:
            raise DefinitionError(path, key_node, f"{where}: defined twice")
        seen.add(key)
        spec = shape.get(key)
        if spec is None:
            raise DefinitionError(path, key_node, f"{where}: unknown key; expected one of {', '.join(shape)}")
        if isinstance(spec, dict):
            _walk(path, value_node, spec, where, out)
        else:
            out[spec.attr] = _convert(path, where, spec, value_node)


def load_definitions(path: Path | str | None = None) -> CatalogConfig:
    """Read a definitions file (the shipped defaults when None). Keys left out keep their defaults."""
    source = Path(path) if path is not None else DEFAULTS_FILE
    text = source.read_text()
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        raise ValueError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        raise DefinitionError(str(source), None, "the file is empty")
    values: dict[str, Any] = {}
    _walk(str(source), root, _SHAPE, "", values)
    config = replace(CatalogConfig(), **values)
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return replace(config, version=f"{config.version}+{digest}")


def describe(config: CatalogConfig) -> list[tuple[str, str]]:
    """(segment, rule) rows for `stream-app segments list`."""
    from ..timeutil import DAY_MS as D

    def days(ms: int) -> str:
        return f"{ms / D:g} d" if ms >= D else f"{ms / MINUTE_MS:g} min"

    rows = [
        ("lifecycle/churned", f"activated, no activity in {days(config.churn_inactive_ms)}"),
        ("lifecycle/loyal_advocate", f"engaged and (>= {config.loyal_min_orders} orders in {days(config.loyal_orders_window_ms)}, "
                                     f"an invite in {days(config.loyal_invite_window_ms)}, or NPS >= {config.loyal_nps_min_score:g} in {days(config.loyal_nps_window_ms)})"),
        ("lifecycle/engaged", f"activated, active on >= {config.engaged_min_days} days in {days(config.engaged_window_ms)}"),
        ("lifecycle/activated", "has performed " + (f"Feature Used ({config.activation_feature})" if config.activation_feature else config.activation_event)),
        ("lifecycle/new_lead", "any other user seen"),
        ("high_intent", f"intent score >= {config.intent_threshold:g} over {days(config.intent_window_ms)} since the last order"),
        ("engagement/highly_engaged", f"decayed score (half-life {days(config.engagement_half_life_ms)}) >= {config.engagement_high:g}"),
        ("engagement/moderately_engaged", f"{config.engagement_moderate:g} <= score < {config.engagement_high:g}"),
        ("engagement/inactive", f"score < {config.engagement_moderate:g}, after at least one event"),
        ("price_sensitive", f">= {config.price_sensitive_min_orders} orders in {days(config.price_sensitive_window_ms)}, "
                            f">= {config.price_sensitive_min_share:.0%} with a coupon or discount"),
        ("promo_responsive", f"a Promotion Clicked in {days(config.promo_window_ms)} followed by an order within "
                             f"{config.promo_order_within_ms / 3600_000:g} h"),
        ("power_user:<feature>", f"Feature Used with the feature >= {config.power_user_min_uses} times in {days(config.power_user_window_ms)}"),
        ("nearing_usage_limit", f"latest Usage Reported value / limit >= {config.usage_limit_ratio:g}"),
        ("trial_not_activated", (f"latest trial started > {days(config.trial_grace_ms)} ago, not ended or bought since, "
                                 f"key feature {config.key_feature!r} never used") if config.key_feature else "off: set trial_not_activated.key_feature"),
        ("stuck_in_onboarding", (f"highest onboarding step below {config.onboarding_last_step}, no higher step for "
                                 f"{config.onboarding_stall_ms / 3600_000:g} h") if config.onboarding_last_step else "off: set stuck_in_onboarding.last_step"),
        ("churn_risk", f"not churned, engaged within {days(config.churn_risk_engaged_within_ms)}, and active days in the last "
                       f"{days(config.churn_risk_recent_ms)} = 0 or < 1/{config.churn_risk_divisor} of the {days(config.churn_risk_prior_ms)} before"),
        ("cart_abandoner", f"cart non-empty {days(config.cart_abandon_after_ms)} after it opened; forgotten {days(config.cart_expiry_ms)} after the last cart event"),
    ]
    if config.rfm_enabled:
        for segment, r_low, r_high, fm_low, fm_high in config.rfm_rules:
            rows.append((f"rfm/{segment}", f"R in {r_low}..{r_high} and FM in {fm_low}..{fm_high} (orders in {days(config.rfm_window_ms)}, "
                                           f"scored against all customers)"))
    if config.custom is not None:
        rows.extend((segment.id, "user-defined (custom_segments)") for segment in config.custom.segments)
    if config.predicted_churn_enabled:
        rows.append(("predicted_churn", f">= {config.predicted_churn_min_orders} orders and P(alive) < {config.predicted_churn_p_alive_below:g} (needs a fitted model)"))
    if config.high_value_enabled:
        rows.append(("high_predicted_value", f"predicted CLV in the top {config.high_value_top_share:.0%} of the fitted customers (needs a fitted model)"))
    return rows


def with_model(config: CatalogConfig, model: Any) -> CatalogConfig:
    """Attach a loaded predictive model; the version then names both the definitions and the model."""
    return replace(config, model=model, version=f"{config.version}+model-{model.model_version}")
