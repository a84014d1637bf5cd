"""A supervisor's ``/healthz`` says how many workers serve, and is not ok when none does.

Why: in worker mode the supervisor answers the admin API but carries no caller traffic; a
supervisor whose workers all crash (a bad upstream library, a port taken after start) must not
tell a load balancer it is fit to serve.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.server import Reply
from gateway.workers.admin import healthz_with_workers


def _ok() -> Any:
    return {"status": "ok", "site": "a"}


def test_ok_while_a_worker_serves_and_503_when_none_does() -> None:
    serving = [2]
    view = healthz_with_workers(_ok, lambda: serving[0], 2)
    assert view() == {"status": "ok", "site": "a", "workers": {"serving": 2, "count": 2}}
    serving[0] = 1
    assert view()["status"] == "ok"  # one of two still serves
    serving[0] = 0
    answer = view()
    assert isinstance(answer, Reply) and answer.status == 503
    assert answer.body["status"] == "not ok"
    assert answer.body["reason"] == "no worker serves (0 of 2)"


def test_an_unhealthy_identity_stays_the_reason() -> None:
    def expired() -> Any:
        return Reply(503, {"status": "not ok", "reason": "SVID expired"})

    answer = healthz_with_workers(expired, lambda: 2, 2)()
    assert isinstance(answer, Reply) and answer.status == 503
    assert answer.body["reason"] == "SVID expired" and answer.body["workers"]["serving"] == 2
