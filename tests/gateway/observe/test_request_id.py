"""Request IDs: a caller's valid W3C traceparent is kept, anything else gets a new ID."""

from __future__ import annotations

from gateway.observe.request_id import from_traceparent, is_request_id, request_id_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01".encode()


def test_valid_traceparent_gives_its_trace_id() -> None:
    assert from_traceparent(VALID) == TRACE
    assert from_traceparent(f"cc-{TRACE}-00f067aa0ba902b7-01-future".encode()) == TRACE
    assert request_id_for([(b"traceparent", VALID)]) == TRACE


def test_invalid_traceparents_are_ignored() -> None:
    bad = [
        b"",
        b"garbage",
        f"ff-{TRACE}-00f067aa0ba902b7-01".encode(),  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(),  # all-zero trace ID
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent ID
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01".encode(),  # uppercase hex
        f"00-{TRACE}-00f067aa0ba902b7-01-extra".encode(),  # version 00 has 4 fields
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01".encode(),
    ]
    for value in bad:
        assert from_traceparent(value) is None, value
        rid = request_id_for([(b"traceparent", value)])
        assert is_request_id(rid) and rid != TRACE


def test_new_ids_are_fresh_and_two_traceparents_are_ignored() -> None:
    ids = {request_id_for([]) for _ in range(100)}
    assert len(ids) == 100 and all(is_request_id(i) for i in ids)
    assert request_id_for([(b"traceparent", VALID), (b"traceparent", VALID)]) != TRACE
