"""Results of one benchmark run and the lines that report them (ratios within the run)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sample:
    """One measurement: ``value`` (req/s or MB/s) and the proxies' CPU seconds it cost."""

    test: str
    target: str
    value: float = math.nan
    unit: str = ""
    work: float = math.nan  # requests or MB moved (for the per-core figure)
    cpu_s: float = math.nan  # CPU seconds of the proxies of this target (nan: no proxy)
    errors: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    failed: str = ""  # why there is no figure

    @property
    def per_core(self) -> float:
        """Work per CPU second of the proxies (req/s per core, MB/s per core)."""
        if not self.cpu_s or math.isnan(self.cpu_s) or self.cpu_s < 0.05:
            return math.nan
        return self.work / self.cpu_s

    def line(self) -> str:
        head = f"[{self.test}] {self.target:<14}"
        if self.failed:
            return f"{head} FAILED: {self.failed.splitlines()[0]}"
        if not math.isnan(self.p50_ms):
            text = f"{head} p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms"
        else:
            text = f"{head} {self.value:10.1f} {self.unit}"
        if not math.isnan(self.cpu_s):
            text += f"  proxy CPU {self.cpu_s:5.2f} s"
            if not math.isnan(self.per_core):
                text += f"  -> {self.per_core:9.1f} {self.unit.split('/')[0]}/s per core"
        if self.errors:
            text += f"  ({self.errors} ERRORS: figure not valid)"
        return text

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["per_core"] = self.per_core
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _get(samples: list[Sample], test: str, target: str) -> Sample | None:
    for s in samples:
        if s.test == test and s.target == target:
            return s
    return None


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(num: float, den: float) -> str:
    if math.isnan(num) or math.isnan(den) or den == 0:
        return "n/a"
    return f"{num / den:.2f}"


def _times(num: float, den: float) -> str:
    """``num`` as a multiple of ``den`` ("6.1x"), or n/a."""
    if math.isnan(num) or math.isnan(den) or den == 0:
        return "n/a"
    return f"{num / den:.1f}x"


def _val(s: Sample | None, attr: str) -> float:
    if s is None or s.failed or s.errors:
        return math.nan
    return float(getattr(s, attr))


def summary(samples: list[Sample]) -> list[str]:
    """The headline lines: every Isthmus figure next to HAProxy's from the same run."""
    lines: list[str] = []

    def g(test: str, target: str, attr: str) -> float:
        return _val(_get(samples, test, target), attr)

    t = "L7 small"
    i1, i2 = g(t, "isthmus 1-hop", "per_core"), g(t, "isthmus 2-hop", "per_core")
    h1, h2 = g(t, "haproxy 1-hop", "per_core"), g(t, "haproxy 2-hop", "per_core")
    lines.append(
        f"L7 small req/s per core: isthmus 1-hop {_fmt(i1)}, 2-hop {_fmt(i2)}; "
        f"haproxy 1-hop {_fmt(h1)}, 2-hop {_fmt(h2)}; "
        f"ratio 2-hop {_ratio(i2, h2)} (target >= 0.25), 1-hop {_ratio(i1, h1)}"
    )
    us = [1e6 / v if v and not math.isnan(v) else math.nan for v in (i1, i2, h1, h2)]
    lines.append(
        f"L7 small proxy CPU per request (us): isthmus 1-hop {_fmt(us[0])}, 2-hop {_fmt(us[1])}; "
        f"haproxy 1-hop {_fmt(us[2])}, 2-hop {_fmt(us[3])}"
    )
    fl = g(t, "trio floor 1-hop", "per_core")
    codec = g(t, "h2 codec", "value")
    lean = g(t, "lean codec", "value")
    floor_us = 1e6 / fl if fl and not math.isnan(fl) else math.nan
    # What bounds any trio + h2 design: 2-hop = two trio hops plus the h2 exchange at least,
    # on the codec links use (the lean one by default; h2's when it was not measured).
    link_codec = codec if math.isnan(lean) else lean
    ceiling_us = 2 * floor_us + link_codec
    lines.append(
        f"L7 small ceilings (same run): minimal trio proxy 1-hop {_fmt(floor_us)} us/request, "
        f"ratio {_ratio(fl, h1)} of haproxy 1-hop; per cross-site exchange h2 codec alone "
        f"{_fmt(codec)} us, lean codec (the links' default) {_fmt(lean)} us; so trio + h2 "
        f"cannot beat {_ratio(us[3], ceiling_us)} of haproxy 2-hop (2 x floor + link codec = "
        f"{_fmt(ceiling_us)} us vs {_fmt(us[3])} us)"
    )
    lines.append(
        f"L7 small CPU per request over the minimal trio proxy's (same run): isthmus 1-hop "
        f"{_times(us[0], floor_us)} (target <= 2.5x), 2-hop {_times(us[1], floor_us)} "
        f"(target <= 4x)"
    )
    raw = {n: g(t, n, "value") for n in _L7_TARGETS}
    lines.append(
        "L7 small raw req/s: "
        + ", ".join(f"{n} {_fmt(v)}" for n, v in raw.items())
        + f"; ratio isthmus/haproxy 2-hop {_ratio(raw['isthmus 2-hop'], raw['haproxy 2-hop'])}"
    )
    t = "L7 latency"
    lat = {n: (g(t, n, "p50_ms"), g(t, n, "p99_ms")) for n in _L7_TARGETS}
    rate = next((s.unit for s in samples if s.test == t and s.unit), "")
    lines.append(
        f"L7 latency at {rate} p50/p99 ms: "
        + "; ".join(f"{n} {_fmt(a, 2)}/{_fmt(b, 2)}" for n, (a, b) in lat.items())
        + f"; p50 isthmus/haproxy 2-hop {_times(lat['isthmus 2-hop'][0], lat['haproxy 2-hop'][0])}"
        + " (target <= 2x)"
    )
    for t, label in (("L7 1MiB", "L7 1 MiB bodies"), ("L4 1MiB", "L4 1 MiB bodies")):
        i, h = g(t, "isthmus 2-hop", "value"), g(t, "haproxy 2-hop", "value")
        ic, hc = g(t, "isthmus 2-hop", "per_core"), g(t, "haproxy 2-hop", "per_core")
        target = " (target >= 0.8)" if t.startswith("L4") else ""
        lines.append(
            f"{label} MB/s: isthmus 2-hop {_fmt(i)}, haproxy 2-hop {_fmt(h)}, direct "
            f"{_fmt(g(t, 'direct', 'value'))}; ratio {_ratio(i, h)}{target}; per core: "
            f"isthmus {_fmt(ic)}, haproxy {_fmt(hc)}, ratio {_ratio(ic, hc)}"
        )
    for t in ("L4 bulk up", "L4 bulk down"):
        i, h = g(t, "isthmus 2-hop", "value"), g(t, "haproxy 2-hop", "value")
        ic, hc = g(t, "isthmus 2-hop", "per_core"), g(t, "haproxy 2-hop", "per_core")
        f, fc = g(t, "trio floor 2-hop", "value"), g(t, "trio floor 2-hop", "per_core")
        lines.append(
            f"{t} MB/s (1 TCP stream): isthmus {_fmt(i)}, haproxy {_fmt(h)}, direct "
            f"{_fmt(g(t, 'direct', 'value'))}; ratio {_ratio(i, h)} (target >= 0.8); "
            f"per core: isthmus {_fmt(ic)}, haproxy {_fmt(hc)}, ratio {_ratio(ic, hc)}; "
            f"ceiling (minimal trio mTLS relay, same copy unit, no HTTP/2): {_fmt(f)} MB/s, ratio "
            f"{_ratio(f, h)}, per core {_ratio(fc, hc)}"
        )
    ran = {s.test for s in samples}
    return [line for line in lines if _test_of(line) in ran]


def _test_of(line: str) -> str:
    """The test a summary line reports on (its lines start with the test's label)."""
    for prefix, test in (
        ("L7 small", "L7 small"),
        ("L7 latency", "L7 latency"),
        ("L7 1 MiB", "L7 1MiB"),
        ("L4 1 MiB", "L4 1MiB"),
        ("L4 bulk up", "L4 bulk up"),
        ("L4 bulk down", "L4 bulk down"),
    ):
        if line.startswith(prefix):
            return test
    return ""


_L7_TARGETS = (
    "direct",
    "haproxy 1-hop",
    "haproxy 2-hop",
    "trio floor 1-hop",
    "isthmus 1-hop",
    "isthmus 2-hop",
)


def combine(samples: list[Sample]) -> list[Sample]:
    """One sample per (test, target) over several rounds: the median figure; per core from the
    summed work and CPU; errors summed; a failure kept only when every round failed."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.test, s.target), []).append(s)
    merged: list[Sample] = []
    for (test, target), group in groups.items():
        good = [s for s in group if not s.failed]
        if not good:
            merged.append(group[0])
            continue

        def med(attr: str, good: list[Sample] = good) -> float:
            values = [float(getattr(s, attr)) for s in good]
            values = [v for v in values if not math.isnan(v)]
            return statistics.median(values) if values else math.nan

        merged.append(
            Sample(
                test,
                target,
                value=med("value"),
                unit=good[0].unit,
                work=sum(s.work for s in good),
                cpu_s=sum(s.cpu_s for s in good),
                errors=sum(s.errors for s in good),
                p50_ms=med("p50_ms"),
                p99_ms=med("p99_ms"),
            )
        )
    return merged


def workers_summary(samples: list[Sample]) -> list[str]:
    """``--workers``: 1 and 2 worker processes (and the single process) side by side, same run.

    req/s is what the machine delivered (wrk shares the same cores, so 2 workers cannot show
    a clean 2x here); CPU per request is the supervisor's plus its workers' CPU over the
    requests served: what a request costs in worker mode, whatever the core count.
    """
    lines: list[str] = []
    t = "L7 small"
    for hop in ("1-hop", "2-hop"):
        names = (f"isthmus {hop}", f"isthmus {hop} w1", f"isthmus {hop} w2")
        found = [_get(samples, t, n) for n in names]
        if found[1] is None and found[2] is None:
            continue
        rps = [_val(s, "value") for s in found]
        per = [_val(s, "per_core") for s in found]
        us = [1e6 / v if v and not math.isnan(v) else math.nan for v in per]
        lines.append(
            f"L7 small workers, {hop} (same run): req/s single process {_fmt(rps[0])}, "
            f"w1 {_fmt(rps[1])}, w2 {_fmt(rps[2])} (w2/w1 {_ratio(rps[2], rps[1])}); "
            f"CPU per request (us, supervisor + workers) single {_fmt(us[0])}, "
            f"w1 {_fmt(us[1])}, w2 {_fmt(us[2])} (w2/w1 {_ratio(us[2], us[1])})"
        )
    return lines
