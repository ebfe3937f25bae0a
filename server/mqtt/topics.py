"""The gateway's topic namespace: ``{prefix}/{type}/{machine_id}/...`` and its status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    gateway_id: str

    def telemetry(self, machine_type: str, machine_id: str) -> str:
        return f"{self.prefix}/{machine_type}/{machine_id}/telemetry"

    def meta(self, machine_type: str, machine_id: str) -> str:
        """Retained: units, thresholds, fault kinds and commands of one machine."""
        return f"{self.prefix}/{machine_type}/{machine_id}/meta"

    def command(self, machine_type: str, machine_id: str) -> str:
        return f"{self.prefix}/{machine_type}/{machine_id}/cmd"

    def reply(self, machine_type: str, machine_id: str) -> str:
        return f"{self.prefix}/{machine_type}/{machine_id}/cmd/reply"

    @property
    def commands(self) -> str:
        """Subscription to every machine's command topic."""
        return f"{self.prefix}/+/+/cmd"

    @property
    def status(self) -> str:
        """Retained ``online``; the last will sets ``offline``."""
        return f"{self.prefix}/status/{self.gateway_id}"

    def machine_of(self, topic: str) -> tuple[str, str] | None:
        """(type, machine id) of a command topic, or None for any other topic."""
        parts = topic.split("/")
        prefix = self.prefix.split("/")
        if len(parts) != len(prefix) + 3 or parts[: len(prefix)] != prefix or parts[-1] != "cmd":
            return None
        return parts[-3], parts[-2]
