"""Whether a failed attempt matches a service's retry conditions, and how long to back off
(pure: no trio; the router classifies exceptions into :data:`Failure` kinds first).

Why kinds instead of exception types: what a failure *was* (no connection, a refused stream,
a broken stream, a 5xx head) is decided where the exception types are known
(:mod:`gateway.router.retry`); matching it against the operator's ``on`` list, the caps and
the jitter is table-driven here, as Envoy's ``retry_on`` names read:

==========================  ==========================================================
``connect-failure``         no connection to an endpoint, or the link to the site was gone
``refused-stream``          the stream was refused (REFUSED_STREAM: nothing was done)
``reset``                   the stream or connection broke, or the attempt timed out,
                            before a response head
``5xx``                     any 5xx head, and every failure above
``gateway-error``           a 502, 503 or 504 head, or a gateway's own for a broken attempt
``retriable-status-codes``  a head whose status is listed in ``retriable_status_codes``
==========================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config.resilience import RetryConfig

#: What an attempt's failure was, for matching against ``on``.
Failure = Literal["connect-failure", "refused-stream", "reset", "gateway-error", "other"]

#: Methods that are safe (RFC 9110 section 9.2.1): only these may be retried in another site,
#: where an unsafe request that a site may have acted on would be run a second time.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
GATEWAY_ERRORS = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryRules:
    """A service's :class:`RetryConfig`, turned into sets for the per-request checks."""

    on: frozenset[str]
    statuses: frozenset[int]
    max_retries: int
    per_try_timeout: float | None
    backoff_base: float
    backoff_max: float
    max_body_bytes: int

    @classmethod
    def of(cls, config: RetryConfig) -> RetryRules:
        return cls(
            on=frozenset(config.on),
            statuses=frozenset(config.retriable_status_codes),
            max_retries=config.max_retries,
            per_try_timeout=config.per_try_timeout_s or None,
            backoff_base=config.backoff_base_s,
            backoff_max=config.backoff_max_s,
            max_body_bytes=config.max_body_bytes,
        )

    @property
    def on_status(self) -> bool:
        """Whether any response head could be retried (else heads pass straight through)."""
        return bool(self.on & {"5xx", "gateway-error", "retriable-status-codes"})


def status_matches(rules: RetryRules, status: int) -> bool:
    """Whether a response head with ``status`` may be retried."""
    on = rules.on
    return (
        ("5xx" in on and status >= 500)
        or ("gateway-error" in on and status in GATEWAY_ERRORS)
        or ("retriable-status-codes" in on and status in rules.statuses)
    )


def failure_matches(rules: RetryRules, failure: Failure) -> bool:
    """Whether a failed attempt (no response head) of kind ``failure`` may be retried."""
    on = rules.on
    if failure == "other":
        return False
    if failure in on or "5xx" in on:
        return True
    # A broken or timed-out attempt is what a gateway answers 502/504 for.
    return failure in ("reset", "gateway-error") and "gateway-error" in on


def backoff(rules: RetryRules, retry: int, unit: float) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): full jitter, ``unit`` being a
    uniform random number in [0, 1) (AWS's "full jitter": spreads a herd best)."""
    ceiling = min(rules.backoff_max, rules.backoff_base * 2.0 ** (retry - 1))
    return ceiling * unit


def next_site(index: int, count: int, *, may_cross: bool) -> int:
    """The index of the site a retry goes to: the next one in failover order (wrapping) when
    the request may cross sites, else the same one."""
    if not may_cross or count <= 1:
        return index
    return (index + 1) % count
