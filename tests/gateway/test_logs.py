"""Log set-up: credentials are redacted in every line, third-party debug stays out."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from foundation.redact import REDACTED, forget_secrets, redact, remember_secret
from gateway.logs import LogSpec, parse_log_spec, setup_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    names = ["", "isthmus", "gateway", "overlay", "discovery", "hpack", "zeroconf"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers
    forget_secrets()


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Adding b'authorization'=b'Bearer s3cr3t-1' to the header table", "s3cr3t-1"),
        ("Decoded (b'cookie', b'session=s3cr3t-2; a=b'), consumed 1", "s3cr3t-2"),
        ("GET / HTTP/1.1\r\nAuthorization: Bearer s3cr3t-3\r\nHost: x", "s3cr3t-3"),
        ("head: 'GET /\\r\\nProxy-Authorization: Basic s3cr3t-4\\r\\n'", "s3cr3t-4"),
        ("{'X-Consul-Token': 's3cr3t-5', 'host': 'h'}", "s3cr3t-5"),
        ('{"set-cookie": "sid=s3cr3t-6"}', "s3cr3t-6"),
        ("[(b'x-auth-token', b's3cr3t-7'), (b'host', b'h')]", "s3cr3t-7"),
        ("GET /v1/kv/x?token=s3cr3t-8&dc=dc1", "s3cr3t-8"),
        ("x-client-secret: s3cr3t-9", "s3cr3t-9"),
        ("X-Api-Key: s3cr3t-10", "s3cr3t-10"),
        ("Set-Cookie: sid=s3cr3t-11; Path=/", "s3cr3t-11"),
    ],
)
def test_credential_shapes_are_redacted(line: str, secret: str) -> None:
    out = redact(line)
    assert secret not in out and REDACTED in out, out


def test_other_text_is_left_alone() -> None:
    for line in (
        "token_file /run/consul/token: cannot read: No such file or directory",
        "connection-specific field 'proxy-authorization' in HTTP/2",
        "GET /v1/health/service/web?index=12&wait=60s",
        "link to b is up (spiffe://b.e2e.test/isthmus/gateway/b)",
    ):
        assert redact(line) == line


def test_a_remembered_secret_is_redacted_anywhere() -> None:
    token = "9f1c2a4e-acl-token-from-config"
    assert token in redact(f"consul said: {token}")
    remember_secret(token)
    remember_secret("short")  # too short to replace everywhere: ignored
    assert redact(f"consul said: {token}.") == f"consul said: {REDACTED}."
    assert redact("a short story") == "a short story"


def test_log_spec() -> None:
    assert parse_log_spec("debug") == LogSpec("debug", ())
    assert parse_log_spec("hpack=debug") == LogSpec("info", (("hpack", "debug"),))
    assert parse_log_spec("Warning, hpack=debug ,h2=info") == LogSpec(
        "warning", (("hpack", "debug"), ("h2", "info"))
    )
    for bad in ("loud", "debug,info", "debug,,x=info", "x=loud", "a..b=debug", ""):
        with pytest.raises(ValueError):
            parse_log_spec(bad)


def _capture(spec: str) -> io.StringIO:
    setup_logging(spec, site="s")
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


def test_debug_is_ours_and_libraries_stay_at_warning() -> None:
    out = _capture("debug")
    logging.getLogger("isthmus.listener.http").debug("ours")
    logging.getLogger("gateway.inbound.east_west").debug("ours too")
    logging.getLogger("hpack.hpack").debug("Decoded (b'host', b'x')")
    logging.getLogger("zeroconf").debug("zeroconf noise")
    logging.getLogger("hpack.hpack").warning("a library's warning")
    text = out.getvalue()
    assert "ours" in text and "ours too" in text and "a library's warning" in text
    assert "Decoded" not in text and "zeroconf noise" not in text


def test_library_debug_on_request_and_still_redacted() -> None:
    out = _capture("info,hpack=debug")
    logging.getLogger("isthmus.gateway").debug("not shown")
    logging.getLogger("hpack.hpack").debug("Adding b'authorization'=b'Bearer s3cr3t-x'")
    text = out.getvalue()
    assert "not shown" not in text
    assert "hpack.hpack: Adding b'authorization'=b'<redacted>'" in text, text


def test_tracebacks_are_redacted() -> None:
    out = _capture("info")
    try:
        raise ValueError("bad field: Authorization: Bearer s3cr3t-tb")
    except ValueError:
        logging.getLogger("isthmus.gateway").exception("request failed")
    text = out.getvalue()
    assert "Traceback" in text and "s3cr3t-tb" not in text, text


def test_a_workers_lines_say_which_worker() -> None:
    setup_logging("info", site="s", worker=2)
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logging.getLogger("isthmus.gateway").info("serving")
    assert " [s worker=2] isthmus.gateway: serving" in out.getvalue()
    assert " [s] isthmus.gateway: ours" in _log_once(_capture("info"), "ours")


def _log_once(out: io.StringIO, message: str) -> str:
    logging.getLogger("isthmus.gateway").info(message)
    return out.getvalue()
