"""Observation on and off for the benchmarks: the config each variant appends, and the
summary lines of an on/off comparison (``scripts/bench_observe.py``,
``scripts/bench_dataplane.py --observe``).

A variant's text is appended to every gateway's config of a copy; ``{dir}`` is the site's
directory (where the access log goes: a file, a write per batch, like production).
"""

from __future__ import annotations

import math

from .report import Sample

VARIANTS = {
    "off": "\n[metrics]\nenabled = false\n",
    "metrics": "",
    "metrics+log": '\n[access_log]\nenabled = true\npath = "{dir}/access.log"\n',
}
#: ``bench_dataplane.py --observe``: the regular Isthmus copy runs ``on``, a second copy
#: (the same topology on other ports) runs ``off``; its targets carry this suffix.
ON, OFF = "metrics+log", "off"
OFF_SUFFIX = " off"


def _us_per_request(samples: list[Sample], target: str) -> float:
    for s in samples:
        if s.test == "L7 small" and s.target == target and not s.failed and not s.errors:
            per_core = s.per_core
            return 1e6 / per_core if per_core and not math.isnan(per_core) else math.nan
    return math.nan


def _f(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def observe_summary(samples: list[Sample]) -> list[str]:
    """Per hop count: gateway CPU per request with metrics + access log on and off, the
    difference, and both as ratios to the same run's minimal trio proxy (1-hop floor)."""
    floor = _us_per_request(samples, "trio floor 1-hop")
    lines = []
    for hops in ("1-hop", "2-hop"):
        on = _us_per_request(samples, f"isthmus {hops}")
        off = _us_per_request(samples, f"isthmus {hops}{OFF_SUFFIX}")
        if math.isnan(on) and math.isnan(off):
            continue
        lines.append(
            f"L7 small observe {hops} CPU per request (metrics + access log): on {_f(on)} us, "
            f"off {_f(off)} us, cost {_f(on - off)} us ({_f(100 * (on / off - 1), 1)} %); "
            f"x trio floor 1-hop ({_f(floor)} us): on {_f(on / floor, 2)}, "
            f"off {_f(off / floor, 2)}"
        )
    return lines
