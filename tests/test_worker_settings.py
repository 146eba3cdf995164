"""Settings of the worker: what the Faust-based worker had and this one no longer uses is named at start."""

from __future__ import annotations


def test_retired_settings_of_the_faust_worker_are_named_with_what_replaced_them():
    from stream_app.worker.app import _warn_about_retired_settings

    warnings = _warn_about_retired_settings({"STREAM_APP_TICK_INTERVAL_MS": "500", "STREAM_APP_BATCH_MAX": "10"})
    assert len(warnings) == 1 and "STREAM_APP_CLOCK_INTERVAL_MS" in warnings[0]
    assert _warn_about_retired_settings({}) == []
