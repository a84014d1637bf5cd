"""A large admin answer is built and encoded a bounded slice per event-loop step.

Why counts, not seconds: a trio instrument counts, between ``before_task_step`` and
``after_task_step``, the rows a view's builder renders (``Catalog.provenance``: once per
endpoint of ``/catalog``, twice; ``Catalog.is_stale``: once per endpoint of the catalog gauges) and
the values the JSON encoder turns into text (``default=str`` is called once per ``Opaque``).
Deterministic on any machine.  Built in one go (the admin server before slicing), one step
handles all of them.  Real sockets, real admin server.
"""

from __future__ import annotations

import functools
import http.client
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS, Steps, complete
from gateway.admin.server import View, serve_admin
from gateway.admin.sliced import ENCODE_SLICE, Rows, Sliced, encode_json
from gateway.admin.views import routes_json, routes_json_steps
from gateway.commands.catalog import catalog_answer, catalog_json
from gateway.observe.metrics import Registry
from gateway.observe.state_gauges import catalog_gauges, catalog_gauges_steps
from overlay.peering.route_table import RouteView

N = 3 * ENCODE_SLICE  # values to encode: three slices' worth
ENDPOINTS = 5_000
ROWS = 500


class PerStep(trio.abc.Instrument):
    """The most calls of each counted function within one task step."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.current = {}

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        for kind, count in self.current.items():
            self.most[kind] = max(self.most.get(kind, 0), count)

    def count(self, kind: str) -> None:
        self.current[kind] = self.current.get(kind, 0) + 1
        self.total[kind] = self.total.get(kind, 0) + 1

    def counting(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.count(kind)
            return fn(*args, **kwargs)

        return wrapper


class Opaque:
    """Not JSON: the encoder calls ``default=str`` on it, once per value (counted)."""

    def __init__(self, i: int, probe: PerStep) -> None:
        self.i = i
        self.probe = probe

    def __str__(self) -> str:
        self.probe.count("encoded")
        return f"v{self.i}"


def catalog(n: int) -> Catalog:
    eps = tuple(
        Endpoint(ServiceName(f"svc{i % 50}", "bench"), f"10.0.{i >> 8}.{i & 255}", 80)
        for i in range(n)
    )
    built, _ = apply(Catalog(), Resynced("static", eps, "1", 0.0), now=0.0, policy=Policy())
    return built


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


async def serve_and_get(
    views: dict[str, View], paths: list[str], probe: PerStep
) -> list[tuple[int, str, bytes]]:
    trio.lowlevel.add_instrument(probe)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_admin, views, host="127.0.0.1", port=0)
            )
            with trio.fail_after(120):  # hang guard only
                answers = [await trio.to_thread.run_sync(get, port, p) for p in paths]
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(probe)
    return answers


def test_encode_json_is_the_admin_format() -> None:
    body = {"b": [1, 2.5, None, True], "a": {"z": "é\n", "y": ServiceName("x", "y")}, "c": []}
    want = (json.dumps(body, indent=2, sort_keys=True, default=str) + "\n").encode()
    assert b"".join(complete(encode_json(body))) == want
    assert b"".join(complete(encode_json(body, slice_pieces=1))) == want
    assert complete(encode_json([])) == [b"[]\n"]
    rows = {"z": 1, "a": Rows(iter([{"k": [1, {"x": "y\n"}]}, [], "s"])), "m": Rows(())}
    plain = {"z": 1, "a": [{"k": [1, {"x": "y\n"}]}, [], "s"], "m": []}
    want = (json.dumps(plain, indent=2, sort_keys=True) + "\n").encode()
    assert b"".join(complete(encode_json(rows, slice_pieces=1))) == want


async def test_a_large_json_answer_is_encoded_a_slice_per_step() -> None:
    probe = PerStep()
    body = {"rows": [Opaque(i, probe) for i in range(N)]}
    [(status, kind, raw)] = await serve_and_get({"/big": lambda: body}, ["/big"], probe)
    assert status == 200 and kind == "application/json"
    assert json.loads(raw) == {"rows": [f"v{i}" for i in range(N)]}
    assert probe.total["encoded"] == N
    assert 0 < probe.most["encoded"] <= ENCODE_SLICE  # all N in one step before slicing


async def test_catalog_and_metrics_answers_are_built_a_slice_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = PerStep()
    snapshot = catalog(ENDPOINTS)
    monkeypatch.setattr(Catalog, "provenance", probe.counting("catalog", Catalog.provenance))
    monkeypatch.setattr(Catalog, "is_stale", probe.counting("is_stale", Catalog.is_stale))
    registry = Registry()
    registry.sliced_collector(lambda: catalog_gauges_steps(snapshot, 1.0, slice_rows=ROWS))

    def metrics() -> Steps[Any]:
        from gateway.admin.server import Text

        text = yield from registry.render_steps()
        return Text(text)

    views: dict[str, View] = {
        "/catalog": lambda: catalog_answer(snapshot, 1.0),
        "/metrics": lambda: Sliced(metrics()),
    }
    (status, _, raw), (m_status, m_kind, m_raw) = await serve_and_get(
        views, ["/catalog", "/metrics"], probe
    )
    assert status == 200 and m_status == 200 and m_kind.startswith("text/plain")
    monkeypatch.undo()
    assert json.loads(raw) == json.loads(json.dumps(catalog_json(snapshot, 1.0), default=str))
    assert 'isthmus_catalog_endpoints{source="static",state="healthy"} 5000' in m_raw.decode()
    # provenance: twice per endpoint (once more through confirmed_at); is_stale: at least once
    assert probe.total["catalog"] == 2 * ENDPOINTS and probe.total["is_stale"] >= ENDPOINTS
    # 256 rows per slice of /catalog (ROW_PIECES); 2 * ENDPOINTS in one step before slicing
    assert 0 < probe.most["catalog"] <= 2 * 256
    assert 0 < probe.most["is_stale"] <= 2 * ROWS


async def test_large_answers_take_turns_and_a_broken_one_is_a_500() -> None:
    """Two large answers at once are rendered one after the other (their slices never share
    a scheduler batch); a view failing mid-way answers 500 and the server goes on."""
    order: list[str] = []

    def rows(tag: str, fail: bool = False) -> Steps[dict[str, int]]:
        for i in range(5):
            order.append(tag)
            time.sleep(0.02)  # a slice of real work: long enough for the other request to come
            if fail and i == 2:
                raise RuntimeError("snapshot gone")
            yield 1
        return {"rows": 5}

    views: dict[str, View] = {
        "/a": lambda: Sliced(rows("a")),
        "/b": lambda: Sliced(rows("b")),
        "/broken": lambda: Sliced(rows("x", fail=True)),
    }
    answers: dict[str, tuple[int, str, bytes]] = {}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_admin, views, host="127.0.0.1", port=0))
        with trio.fail_after(60):  # hang guard only
            async with trio.open_nursery() as clients:
                for path in ("/a", "/b"):

                    async def one(path: str = path) -> None:
                        answers[path] = await trio.to_thread.run_sync(get, port, path)

                    clients.start_soon(one)
            answers["/broken"] = await trio.to_thread.run_sync(get, port, "/broken")
            answers["/a2"] = await trio.to_thread.run_sync(get, port, "/a")
        nursery.cancel_scope.cancel()
    assert [answers[p][0] for p in ("/a", "/b", "/a2")] == [200, 200, 200]
    together = "".join(order[:10])
    assert together in ("aaaaabbbbb", "bbbbbaaaaa"), together
    assert answers["/broken"][0] == 500
    assert json.loads(answers["/broken"][2]) == {"error": "RuntimeError: snapshot gone"}


def test_the_sliced_builders_give_what_the_plain_ones_give() -> None:
    snapshot = catalog(1_200)
    want = (json.dumps(catalog_json(snapshot, 2.0), indent=2, sort_keys=True) + "\n").encode()
    assert b"".join(complete(encode_json(catalog_answer(snapshot, 2.0)))) == want
    empty = (json.dumps(catalog_json(Catalog(), 2.0), indent=2, sort_keys=True) + "\n").encode()
    assert b"".join(complete(encode_json(catalog_answer(Catalog(), 2.0)))) == empty
    assert tuple(complete(catalog_gauges_steps(snapshot, 2.0, slice_rows=7))) == tuple(
        catalog_gauges(snapshot, 2.0)
    )
    import immutables

    view = RouteView(
        "a", immutables.Map({ServiceName(f"s{i}", "ns"): ("a", "b") for i in range(30)})
    )
    assert complete(routes_json_steps(view, "mesh", slice_rows=4)) == routes_json(view, "mesh")


async def test_the_overlay_answer_checks_a_slice_of_endpoints_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``/overlay`` checks up to 20k local endpoints (routable? exported?): a slice per step,
    and it does not wait behind a large answer (it is not exclusive)."""
    from types import SimpleNamespace

    from discovery.watch import Watch
    from gateway.admin.overlay_view import overlay_view
    from overlay.federation.config import ExportConfig
    from overlay.federation.import_ import ImportTable

    probe = PerStep()
    snapshot = catalog(ENDPOINTS)
    monkeypatch.setattr(Catalog, "is_routable", probe.counting("routable", Catalog.is_routable))
    peering = SimpleNamespace(
        status=lambda: {}, imports=Watch(ImportTable(grace=60.0)), export_rules=(ExportConfig(),)
    )
    view = overlay_view("a", peering, Watch(snapshot), None)  # type: ignore[arg-type]
    assert isinstance(view(), Sliced) and not view().exclusive
    [(status, _, raw)] = await serve_and_get({"/overlay": view}, ["/overlay"], probe)
    assert status == 200 and json.loads(raw)["nodes"][0]["site"] == "a"
    assert probe.total["routable"] == ENDPOINTS
    assert 0 < probe.most["routable"] <= SLICE_ITEMS  # ENDPOINTS in one step before slicing
