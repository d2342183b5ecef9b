"""Where records go. Every sink implements the small Sink interface."""

from .base import Sink

__all__ = ["Sink"]
