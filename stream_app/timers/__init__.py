"""Due-time schedule: which user of a partition needs attention next."""

from .schedule import DueSchedule

__all__ = ["DueSchedule"]
