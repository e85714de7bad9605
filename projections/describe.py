"""The history line of an event: :func:`engine.lifecycle.describe.describe`, re-exported.

Its home is the core, next to the other readers of the events; this name is kept for code
that imports it from here.
"""

from engine.lifecycle.describe import describe

__all__ = ["describe"]
