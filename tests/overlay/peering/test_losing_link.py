"""A replica is losing a link the moment any of its links closes, extra ones included.

Why: with worker processes, a worker's links to a replica are extra (pinned) links -- its own
dialed one and those the replica's workers dialed to it.  When that replica dies, the
request on one of its links fails first; its retry asks for the site's replicas again, and
the replica's other link, whose worker dies a moment later, still looks live.  Before its
link task records ``link_lost_at``, only ``losing_link`` can tell the retry to try the other
replica first; it looked at the primary slots only, so the retry went to the dying replica
too and the request failed (seen in tests/e2e/test_workers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from foundation.spiffe_id import SpiffeId
from overlay.peering.config import PeerSpec
from overlay.peering.links import ExtraLink, PeerLinks


@dataclass
class _Conn:
    is_closing: bool = False


def _state() -> PeerLinks:
    spec = PeerSpec("b", "127.0.0.2", 15443, SpiffeId.parse("spiffe://b.test/gw"), replica="x")
    return PeerLinks(spec)


def _extra(closing: bool, *, draining: bool = False) -> ExtraLink:
    return ExtraLink(cast(Any, object()), cast(Any, _Conn(closing)), dialed=True, draining=draining)


def test_a_closing_extra_link_means_the_replica_is_losing_a_link() -> None:
    state = _state()
    state.extras = [_extra(False), _extra(False)]
    assert not state.losing_link()
    state.extras = [_extra(True), _extra(False)]  # one breaks; the other still looks live
    assert state.losing_link()


def test_a_drained_extra_link_closing_is_no_loss() -> None:
    state = _state()
    state.extras = [_extra(True, draining=True), _extra(False)]  # the pool closed it: idle
    assert not state.losing_link()


def test_a_closing_primary_link_still_counts() -> None:
    state = _state()
    state.dialed_client = cast(Any, _Conn(True))
    assert state.losing_link()
