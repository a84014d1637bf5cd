"""Debug logs of real gateway processes never carry credentials, nor third-party noise.

Two gateway processes (sites ``a`` and ``b``, ``b`` runs the whoami service ``api``) at
``--log-level debug``.  Requests carrying every kind of credential -- ``Authorization``,
``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Consul-Token`` and made-up
``*-token`` / ``*-secret`` / ``*-api-key`` headers -- cross the overlay over HTTP/1.1 and
h2c, well-formed and malformed (so that error paths log them too).  Then neither gateway's
log may contain any of the secret values, and no line may come from hpack/h2 (which log
every header they encode or decode at DEBUG).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from pathlib import Path

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request, h2_request
from tests.e2e.harness import make_topology, open_overlay, routes_of

HTTP_PORT = 15080
API_PORT = 18090
API = "api.default.isthmus"
SECRETS = {
    "authorization": "Bearer s3cr3t-bearer-token-0001",
    "proxy-authorization": "Basic czNjcjN0LXByb3h5LWF1dGg=",
    "cookie": "session=s3cr3t-cookie-0002; theme=dark",
    "set-cookie": "sid=s3cr3t-set-cookie-0003",
    "x-consul-token": "s3cr3t-consul-token-0004",
    "x-auth-token": "s3cr3t-auth-token-0005",
    "x-client-secret": "s3cr3t-client-secret-0006",
    "x-api-key": "s3cr3t-api-key-0007",
}
#: The parts of each value that must never be written: the random-looking tails.
NEEDLES = ["s3cr3t", "czNjcjN0LXByb3h5LWF1dGg"]


async def test_debug_logs_hold_no_secrets_and_no_hpack_lines(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (DemoService("api", "http", API_PORT),)})
    async with open_overlay(
        tmp_path, topology, services=True, gateway_args=("--log-level", "debug")
    ) as ov:
        await ov.wait("a", "/routes", lambda d: routes_of(d, API) == ["b"])
        a = str(ov.built["a"].site.address)
        # HTTP/2: proxy-authorization is hop-by-hop here (the h2c request with it is refused
        # as malformed below, which logs it on an error path).
        fields = [(n, v) for n, v in SECRETS.items() if n != "proxy-authorization"]
        with trio.fail_after(30):
            # The service may still be starting: the first answers may be 502/503.
            for _ in range(100):
                reply = await h1_request(a, HTTP_PORT, authority=API, headers=SECRETS)
                if reply.status == 200:
                    break
                await trio.sleep(0.1)
            assert reply.status == 200, reply
            assert (await h2_request(a, HTTP_PORT, authority=API, headers=fields)).status == 200
            # Malformed: the listener logs why it refused them (with the offending fields).
            bad_h1 = {**SECRETS, "Content-Length": "1, 2"}
            assert (await h1_request(a, HTTP_PORT, authority=API, headers=bad_h1)).status == 400
            bad_h2 = list(SECRETS.items())
            await _ignore_reset(h2_request(a, HTTP_PORT, authority=API, headers=bad_h2))
            # Unknown address and an unreachable one: error paths of the router.
            await h1_request(a, HTTP_PORT, authority="nope.default.isthmus", headers=SECRETS)
        await ov.stop("a")
        await ov.stop("b")
        logs = {site: ov.log(site) for site in ("a", "b")}
    for site, text in logs.items():
        lines = text.splitlines()
        assert any(" DEBUG " in line for line in lines), f"{site} logged nothing at DEBUG"
        for needle in NEEDLES:
            leaked = [line for line in lines if needle in line]
            assert not leaked, (site, leaked[:5])
        noise = [line for line in lines if " hpack" in line or " h2." in line or "hpack." in line]
        assert not noise, (site, len(noise), len(lines), noise[:5])
    print({site: len(text.splitlines()) for site, text in logs.items()})


async def _ignore_reset(call: Awaitable[object]) -> None:
    """Await ``call``; a reset stream or a closed connection is an accepted outcome."""
    with contextlib.suppress(Exception):  # any refusal is fine: only the logs matter here
        await call
