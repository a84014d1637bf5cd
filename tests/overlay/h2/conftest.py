"""``any_engine``: run a test once per protocol engine of ``H2Connection`` (h2 and lean).

A module that tests the driver (policy, limits, abuse budgets) marks itself with
``pytestmark = pytest.mark.usefixtures("any_engine")``: every connection it builds without
naming an engine then runs on each engine in turn, so both keep the same guarantees.
"""

from __future__ import annotations

import pytest

from overlay.h2 import connection
from overlay.h2.limits import EngineName


@pytest.fixture(params=["h2", "lean"])
def any_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> EngineName:
    name: EngineName = request.param
    monkeypatch.setattr(connection, "DEFAULT_ENGINE", name)
    return name
