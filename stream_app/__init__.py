"""Streaming behavioral segmentation: clickstream in, segment transitions out."""

__version__ = "0.1.0"
