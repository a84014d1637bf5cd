"""``caller_engine``: run a caller-facing HTTP/2 test once per protocol engine (h2 and lean).

Why patch ``h2_limits`` rather than pass limits: the tests build their listeners from the shared
``TEST_LIMITS``; the fixture makes every caller connection a listener serves take
``caller_h2_engine = <param>`` through the real config field (the engine is then chosen by
``H2Connection`` exactly as in production).  Test clients keep their own default engine.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.config.model import LimitsConfig
from gateway.listener import h2 as listener_h2
from overlay.h2.limits import EngineName, H2Limits


@pytest.fixture(params=["h2", "lean"])
def caller_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> EngineName:
    name: EngineName = request.param
    real = listener_h2.h2_limits

    def with_engine(limits: LimitsConfig) -> H2Limits:
        return real(replace(limits, caller_h2_engine=name))

    monkeypatch.setattr(listener_h2, "h2_limits", with_engine)
    return name
