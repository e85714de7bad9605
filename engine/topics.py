"""Names of joblog's topics (DESIGN.md §2) under a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import DEFAULT_PREFIX


@dataclass(frozen=True)
class Topics:
    """Topic names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def commands(self) -> str:
        return f"{self.prefix}commands"

    @property
    def reports(self) -> str:
        return f"{self.prefix}reports"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def state(self) -> str:
        return f"{self.prefix}state"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    def dispatch(self, queue: str) -> str:
        """The dispatch topic of a worker queue."""
        return f"{self.prefix}dispatch.{queue}"

    def value_schema(self, topic: str) -> str | None:
        """The topic schema of a joblog topic's records (``"Event"`` for ``events``, ...), or
        ``None`` for a topic that is not joblog's."""
        if not topic.startswith(self.prefix):
            return None
        name = topic[len(self.prefix) :]
        if name.startswith("dispatch."):
            return "Dispatch"
        return _VALUE_SCHEMAS.get(name)

    @property
    def copartitioned(self) -> tuple[str, str, str, str]:
        """The topics that share one partition count (keyed by submission id)."""
        return (self.commands, self.reports, self.events, self.state)


_VALUE_SCHEMAS = {
    "commands": "Command",
    "reports": "Report",
    "events": "Event",
    "state": "Snapshot",
    "control": "Control",
    "deadletter": "DeadLetter",
}
