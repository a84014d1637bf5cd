"""The overlay map page in a real headless browser (Debian's chromium via chromedriver).

Three real gateway processes; the page at ``/`` of one of them must show the three sites and
the two links up, a rate on a link that requests crossed, then a killed site as down (its link
dashed and labelled), by text and not by colour only, and the whole picture marked stale once
its own gateway is gone.  A second test feeds the page a hostile document from the real admin
server to check that names are shown as text, never run as markup, and drives it by keyboard.
Screenshots are saved as test artifacts (see :func:`tests.e2e.browser.artifact_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.admin.page import page_views
from gateway.admin.server import serve_admin
from gateway.demo.topology import DemoService
from tests.e2e.browser import (
    browser_or_skip,
    console_errors,
    open_chromium,
    save_page,
    wait_until,
)
from tests.e2e.clients import h1_request
from tests.e2e.harness import make_topology, open_overlay

pytestmark = pytest.mark.e2e

SITES = ("east", "west", "north")
WEB = (DemoService("web", "http", 18080),)
API = (DemoService("api", "http", 18081, namespace="payments"),)

NODES_JS = """
return Array.from(document.querySelectorAll('#map .node')).map(n => ({
  site: n.getAttribute('data-site'), state: n.getAttribute('data-state'), text: n.textContent}));
"""
EDGES_JS = """
return Array.from(document.querySelectorAll('#map line.edge')).map(e => ({
  edge: e.getAttribute('data-edge'), state: e.getAttribute('data-state'),
  dashed: getComputedStyle(e).strokeDasharray}));
"""
ROWS_JS = """
return Array.from(document.querySelectorAll('#sites tbody tr')).map(r => ({
  site: r.getAttribute('data-site'), state: r.getAttribute('data-state'), text: r.innerText}));
"""


@pytest.fixture
def chromium() -> tuple[str, str]:
    """Chromium and chromedriver, or a skip naming why (a sync fixture, so the reason shows)."""
    return browser_or_skip()


TRAFFIC_JS = """
const row = Array.from(document.querySelectorAll('#sites tbody tr'))
  .find(r => r.getAttribute('data-site') === arguments[0]);
return row ? row.querySelector('td:nth-child(5)').textContent : '';
"""
REQUESTS = 20


def _by_site(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["site"]: i for i in items}


async def test_the_map_shows_three_sites_then_a_killed_one_as_down(
    tmp_path: Path, chromium: tuple[str, str]
) -> None:
    topology = make_topology(SITES, {"east": WEB + API, "west": WEB, "north": WEB})
    async with open_overlay(tmp_path, topology, services=True) as ov:
        await ov.wait(
            "east",
            "/overlay",
            lambda d: (
                [e["state"] for e in d["edges"]] == ["up", "up"]
                and all(n["services"] for n in d["nodes"])
            ),
        )
        browser = await trio.to_thread.run_sync(open_chromium, *chromium, tmp_path / "p")
        try:
            await trio.to_thread.run_sync(_check_all_up, browser, ov.url("east") + "/")
            # Traffic from east to west: the map shows a rate on that link once the page's
            # next poll has counted it (the rate's size is not checked: that would be timed).
            east = str(ov.built["east"].site.address)
            for _ in range(REQUESTS):
                reply = await h1_request(
                    east, topology.http_port, authority="web.default.west.isthmus"
                )
                assert reply.status == 200
            await trio.to_thread.run_sync(_check_traffic_to_west, browser)
            await ov.kill("north")
            await trio.to_thread.run_sync(_check_north_down, browser)
            await ov.kill("east")  # the page's own gateway: the picture is kept, marked stale
            await trio.to_thread.run_sync(_check_marked_stale, browser)
        finally:
            await trio.to_thread.run_sync(browser.quit)


def _check_all_up(browser: Any, url: str) -> None:
    browser.get(url)
    wait_until(
        browser,
        lambda b: (
            len(b.execute_script(EDGES_JS)) == 2
            and all(e["state"] == "up" for e in b.execute_script(EDGES_JS))
        ),
        "three sites drawn with both links up",
    )
    nodes = _by_site(browser.execute_script(NODES_JS))
    assert set(nodes) == set(SITES)
    assert {site: n["state"] for site, n in nodes.items()} == dict.fromkeys(SITES, "up")
    assert "(this site)" in nodes["east"]["text"] and "up" in nodes["west"]["text"]
    edges = browser.execute_script(EDGES_JS)
    assert sorted(e["edge"] for e in edges) == ["east\u2194north", "east\u2194west"]
    assert all(e["dashed"] == "none" for e in edges)  # solid: up
    rows = _by_site(browser.execute_script(ROWS_JS))
    assert set(rows) == set(SITES)
    assert "ms" in rows["west"]["text"]  # the link's round trip
    services = browser.find_element("css selector", "#services").text
    assert "api" in services and "payments" in services and "web" in services
    assert "west, north" in services or "north, west" in services  # exported to both peers
    assert "Content Security Policy" not in " ".join(console_errors(browser))
    save_page(browser, "overlay-map-all-up.png")


def _check_traffic_to_west(browser: Any) -> None:
    def traffic(b: Any) -> str:
        return str(b.execute_script(TRAFFIC_JS, "west"))

    wait_until(
        browser,
        lambda b: "req/s" in traffic(b) and not traffic(b).startswith("0.0 req/s"),
        "a non-zero rate from east to west after the requests",
    )
    edges = browser.find_element("css selector", "#map").text
    assert edges.count("req/s") == 2  # a rate on each link


def _check_north_down(browser: Any) -> None:
    def north_down(b: Any) -> bool:
        node = _by_site(b.execute_script(NODES_JS)).get("north")
        return node is not None and node["state"] == "down"

    wait_until(browser, north_down, "north drawn as down after its gateway was killed")
    nodes = _by_site(browser.execute_script(NODES_JS))
    assert "down" in nodes["north"]["text"]  # said in words, not only in colour
    assert nodes["west"]["state"] == "up" and nodes["east"]["state"] == "up"
    edges = {e["edge"]: e for e in browser.execute_script(EDGES_JS)}
    assert edges["east\u2194north"]["state"] == "down"
    assert edges["east\u2194north"]["dashed"] != "none"  # dashed: down, also without colour
    assert edges["east\u2194west"]["state"] == "up"
    labels = browser.find_element("css selector", "#map").text
    assert "LINK DOWN" in labels
    row = _by_site(browser.execute_script(ROWS_JS))["north"]
    assert row["state"] == "down" and "link down" in row["text"]
    status = browser.find_element("id", "status").text
    assert "down: north" in status
    save_page(browser, "overlay-map-north-down.png")


def _check_marked_stale(browser: Any) -> None:
    wait_until(
        browser,
        lambda b: "STALE" in b.find_element("id", "status").text,
        "the page says STALE once its gateway stopped answering",
    )
    assert "stale" in (browser.find_element("tag name", "body").get_attribute("class") or "")
    assert len(browser.execute_script(NODES_JS)) == 3  # the last picture is kept
    save_page(browser, "overlay-map-stale.png")


HOSTILE = "<img src=x onerror=window.pwned=1>"


def _hostile_doc() -> dict[str, Any]:
    service = {
        "service": HOSTILE,
        "namespace": "<b>ns</b>",
        "healthy": 1,
        "total": 2,
        "state": "degraded",
        "stale": False,
        "exported_to": [HOSTILE],
    }
    return {
        "site": "here",
        "metrics": True,
        "traffic_window_s": 30.0,
        "more_sites": 0,
        "nodes": [
            {
                "site": "here",
                "local": True,
                "state": "up",
                "reasons": [],
                "services": [service],
                "more_services": 0,
                "traffic": {"local": None, "from_peers": None},
            },
            {
                "site": HOSTILE,
                "local": False,
                "state": "down",
                "reasons": ["link down"],
                "services": [],
                "more_services": 0,
                "traffic": None,
            },
            {
                "site": "there",
                "local": False,
                "state": "up",
                "reasons": [],
                "services": [],
                "more_services": 0,
                "traffic": None,
            },
        ],
        "edges": [
            {
                "from": "here",
                "to": HOSTILE,
                "state": "down",
                "rtt_ms": None,
                "up_for_s": None,
                "links": [],
                "failed_attempts": 2,
                "links_established": 0,
                "last_error": "<script>window.pwned=2</script>",
                "traffic": None,
            },
            {
                "from": "here",
                "to": "there",
                "state": "up",
                "rtt_ms": 0.5,
                "up_for_s": 3.0,
                "links": ["dialed"],
                "failed_attempts": 0,
                "links_established": 1,
                "last_error": None,
                "traffic": {"requests_per_s": 2.5, "bytes_per_s": 2048.0, "over_s": 30.0},
            },
        ],
    }


async def test_names_are_text_and_the_map_works_by_keyboard(
    tmp_path: Path, chromium: tuple[str, str]
) -> None:
    views = {**page_views(), "/overlay": _hostile_doc}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_admin(
                views, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        browser = await trio.to_thread.run_sync(open_chromium, *chromium, tmp_path / "p")
        try:
            url = f"http://127.0.0.1:{port}/"
            await trio.to_thread.run_sync(_check_hostile_names_and_keys, browser, url)
        finally:
            await trio.to_thread.run_sync(browser.quit)
        nursery.cancel_scope.cancel()


def _check_hostile_names_and_keys(browser: Any, url: str) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    wait_until(browser, lambda b: len(b.execute_script(NODES_JS)) == 3, "three nodes drawn")
    # Shown as text, never parsed: no element was made from a name, no script ran.
    assert (
        browser.execute_script("return document.querySelectorAll('main img, main b').length") == 0
    )
    assert browser.execute_script("return window.pwned === undefined")
    page_text = browser.find_element("tag name", "main").text
    assert HOSTILE in page_text and "<b>ns</b>" in page_text
    assert "<script>window.pwned=2</script>" in page_text
    assert "2.5 req/s, 2.0 KiB/s" in page_text
    # Keyboard: Tab reaches the skip link, then a site of the map; arrows move between sites;
    # Enter takes the focus to that site's row in the table.
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    for _ in range(5):  # past the skip link and the pause box, bounded
        if active.get_attribute("data-key"):
            break
        active.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
    assert active.get_attribute("data-key") == "site:here"
    active.send_keys(Keys.ARROW_RIGHT)
    active = browser.switch_to.active_element
    assert active.get_attribute("data-site") == HOSTILE
    active.send_keys(Keys.ENTER)
    active = browser.switch_to.active_element
    assert active.tag_name == "tr" and active.get_attribute("data-site") == HOSTILE
    assert "highlight" in (active.get_attribute("class") or "")
    # The focus survives a refresh (the page redraws everything every few seconds).
    renders = int(browser.execute_script("return document.body.dataset.renders"))
    wait_until(
        browser,
        lambda b: int(b.execute_script("return document.body.dataset.renders")) > renders,
        "a refresh",
    )
    active = browser.switch_to.active_element
    assert active.tag_name == "tr" and active.get_attribute("data-site") == HOSTILE
    assert "Content Security Policy" not in " ".join(console_errors(browser))
    save_page(browser, "overlay-map-hostile-names.png")
