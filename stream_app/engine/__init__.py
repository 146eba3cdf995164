"""The pure core: a user's timeline (events and timers in event-time order) and a partition's clock.

No Kafka here. The worker, the replay command and the benchmark all drive these same classes.
"""

from .partition import BatchResult, PartitionEngine, RawRecord
from .timeline import advance, take_event

__all__ = ["BatchResult", "PartitionEngine", "RawRecord", "advance", "take_event"]
