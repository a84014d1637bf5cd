"""TTL checks of the test agent, as HashiCorp documents them.  TEST-ONLY.

A check registered with ``TTL`` (a Go duration) keeps the status it was last given until the
TTL runs out without an update (``PUT /v1/agent/check/{pass,warn,fail,update}/:check_id``);
then the agent sets it ``critical`` with the output ``TTL expired``.  An update re-arms it.
``DeregisterCriticalServiceAfter`` is not modelled (Consul's minimum is a minute and its
reaper runs on its own schedule; no test here waits for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TtlChecks:
    """Per check ID: its TTL and the moment it expires (None once expired)."""

    ttl: dict[str, float] = field(default_factory=dict)
    deadline: dict[str, float | None] = field(default_factory=dict)

    def arm(self, check_id: str, ttl_s: float, now: float) -> None:
        self.ttl[check_id] = ttl_s
        self.deadline[check_id] = now + ttl_s

    def touch(self, check_id: str, now: float) -> None:
        if check_id in self.ttl:
            self.deadline[check_id] = now + self.ttl[check_id]

    def drop(self, check_id: str) -> None:
        self.ttl.pop(check_id, None)
        self.deadline.pop(check_id, None)

    def next_deadline(self) -> float | None:
        armed = [d for d in self.deadline.values() if d is not None]
        return min(armed) if armed else None

    def expired(self, now: float) -> list[str]:
        """The checks whose TTL ran out by ``now`` (each reported once until touched)."""
        out = [c for c, d in self.deadline.items() if d is not None and d <= now]
        for check_id in out:
            self.deadline[check_id] = None
        return out
