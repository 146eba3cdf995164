"""Replay without Kafka: the same core over a file, in event-time order."""

from .run import InMemoryStore, replay_file, replay_records

__all__ = ["InMemoryStore", "replay_file", "replay_records"]
