"""The worker's segment definitions and predictive model: loaded at start, reloaded when their files change.

A changed file that is valid replaces the running definitions (every user is decided again, cause
`definitions`); an invalid one is rejected with its file:line:column message and the old definitions
keep running.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from prometheus_client import Counter

from ..segments.config import CatalogConfig
from ..segments.definitions import DEFAULTS_FILE, load_definitions, with_model
from ..settings import Settings

log = logging.getLogger(__name__)
RELOADS = Counter("stream_app_definition_reloads_total", "Changed definition or model files seen, by result", ["result"])


def load_config(settings: Settings) -> CatalogConfig:
    """Definitions file (or the shipped defaults), environment overrides, and the model if configured."""
    config = load_definitions(settings.segments_file)
    if settings.lateness_ms is not None:
        config = replace(config, lateness_ms=settings.lateness_ms)
    overrides = {
        "historical_after_ms": settings.historical_after_ms,
        "backfill_age_ms": settings.backfill_age_ms,
        "backfill_drained_after_ms": settings.backfill_drained_after_ms,
    }
    config = replace(config, **{name: value for name, value in overrides.items() if value is not None})
    if settings.model_file is not None:
        from ..predict.model_file import load_model

        config = with_model(config, load_model(settings.model_file))
    return config


def _stamp(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime, stat.st_size)


class DefinitionsWatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = load_config(settings)
        self._stamps = self._current()
        log.info("segment definitions %s from %s", self.config.version, settings.segments_file or DEFAULTS_FILE)

    def _current(self) -> tuple[object, object]:
        return (_stamp(self.settings.segments_file), _stamp(self.settings.model_file))

    def poll(self) -> CatalogConfig | None:
        """The new configuration when a watched file changed and is valid; None otherwise."""
        stamps = self._current()
        if stamps == self._stamps:
            return None
        self._stamps = stamps
        try:
            config = load_config(self.settings)
        except Exception as exc:  # any error in a user's file must not stop the worker
            RELOADS.labels("rejected").inc()
            log.error("rejected changed definitions, the previous ones keep running: %s", exc)
            return None
        if config.version == self.config.version:
            return None
        RELOADS.labels("accepted").inc()
        log.info("loaded changed definitions: %s (was %s)", config.version, self.config.version)
        self.config = config
        return config
