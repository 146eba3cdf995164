"""The segment definitions file: the shipped defaults are the catalog; errors say where and what."""

import subprocess
import sys
from dataclasses import asdict

import pytest

from stream_app.segments.config import CatalogConfig
from stream_app.segments.definitions import DEFAULTS_FILE, DefinitionError, load_definitions, parse_duration

from .helpers import REPO


def test_the_shipped_file_holds_exactly_the_catalog_defaults():
    loaded = asdict(load_definitions())
    defaults = asdict(CatalogConfig())
    loaded.pop("version"), defaults.pop("version")
    assert loaded == defaults


def test_version_changes_with_the_file_content(tmp_path):
    copy = tmp_path / "s.yaml"
    copy.write_text(DEFAULTS_FILE.read_text())
    first = load_definitions(copy).version
    copy.write_text(DEFAULTS_FILE.read_text().replace("threshold: 6", "threshold: 7"))
    second = load_definitions(copy)
    assert second.intent_threshold == 7 and second.version != first


@pytest.mark.parametrize(
    "text, line, column, fragment",
    [
        ("high_intent:\n  threshold: six\n", 2, 14, "expected a number"),
        ("high_intnt:\n  threshold: 6\n", 1, 1, "unknown key"),
        ("cart_abandoner:\n  abandon_after: 30 minutes\n", 2, 18, "expected a duration"),
        ("lifecycle:\n  engaged:\n    window: 400d\n", 3, 13, "between 1ms and 365d"),
        ("predicted_churn:\n  p_alive_below: 1.5\n", 2, 18, "between 0 and 1"),
        ("high_intent:\n  weights:\n    Product Added: lots\n", 3, 20, "expected a number"),
        ("high_intent: 6\n", 1, 14, "expected a mapping"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, text, line, column, fragment):
    path = tmp_path / "defs.yaml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as info:
        load_definitions(path)
    assert (info.value.line, info.value.column) == (line, column)
    assert str(info.value).startswith(f"{path}:{line}:{column}:") and fragment in str(info.value)


def test_no_code_is_ever_evaluated(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("version: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError):
        load_definitions(path)


def test_durations():
    assert [parse_duration(t) for t in ("500ms", "5s", "30m", "1h", "7d", "1.5d")] == [500, 5000, 1_800_000, 3_600_000, 604_800_000, 129_600_000]


def test_cli_validate_and_list(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "stream_app", "segments", *a], capture_output=True, text=True, cwd=REPO)  # noqa: E731
    ok = run("validate", str(DEFAULTS_FILE))
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("high_intent:\n  threshold: six\n")
    rejected = run("validate", str(bad))
    assert rejected.returncode == 1 and f"{bad}:2:14" in rejected.stderr
    listing = run("list")
    assert listing.returncode == 0 and "cart_abandoner" in listing.stdout and "lifecycle/churned" in listing.stdout
