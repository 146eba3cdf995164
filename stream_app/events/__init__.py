"""Input side: decode raw clickstream bytes, validate them against the contract, or say why not."""

from .decode import DeadLetterReason, Event, InvalidEvent, decode_event

__all__ = ["DeadLetterReason", "Event", "InvalidEvent", "decode_event"]
