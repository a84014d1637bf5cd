"""The control site's push: wire, sender and receiver cores, answers, the store, the API's
authorization and the ``[fleet] source = "site"`` config.  Pure: no sockets."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from foundation.spiffe_id import SpiffeId
from gateway.config.errors import ConfigInvalid, Problem
from gateway.config.load import load_text
from gateway.fleet.authority import AuthorityError, Conflict
from gateway.fleet.document import EMPTY, load_document_text
from gateway.fleet.site_api import authorize
from gateway.fleet.site_core import (
    Answer,
    PushSession,
    ReceiveSession,
    decide,
    rejection_reason,
    reply_for,
)
from gateway.fleet.site_store import SiteStore
from gateway.fleet.site_wire import (
    FleetPush,
    decode_push,
    decode_reply,
    encode_push,
    encode_reply,
    max_frame_bytes,
)
from overlay.federation.protocol import (
    MAX_REASON_CHARS,
    Ack,
    FederationProtocolError,
    FrameReader,
    Nack,
)

DOC = load_document_text(
    '[[resources]]\nkind = "policies"\nname = "all"\n[resources.spec]\nallow_sites = ["*"]\n'
)
DOC2 = load_document_text(
    '[[resources]]\nkind = "policies"\nname = "b"\ntargets = ["b"]\n'
    '[resources.spec]\nallow_sites = ["*"]\n'
)


def frames(data: bytes, decode: object, limit: int = 10_000_000) -> list[object]:
    return FrameReader(decode, max_message_bytes=limit).feed(data)  # type: ignore[arg-type]


# -- wire -------------------------------------------------------------------------------------


def test_push_round_trips_and_replies_are_the_federations() -> None:
    push = FleetPush("hq", "e1", 3, DOC.canonical_json())
    data = encode_push(push, max_document_bytes=1024 * 1024)
    assert frames(data, decode_push) == [push]
    for reply in (Ack("e1", 3), Nack("e1", 3, "version x: bad")):
        assert frames(encode_reply(reply), decode_reply) == [reply]


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "fleet", "origin_site": "hq", "epoch": "e", "version": 1},  # no document
        {"type": "fleet", "origin_site": "hq", "epoch": "e", "version": 0, "document": ""},
        {"type": "fleet", "origin_site": "hq", "epoch": "e", "version": True, "document": ""},
        {"type": "fleet", "origin_site": "HQ!", "epoch": "e", "version": 1, "document": ""},
        {"type": "fleet", "origin_site": "hq", "epoch": "e/", "version": 1, "document": ""},
        {"type": "fleet", "origin_site": "hq", "epoch": "e", "version": 1, "document": 1},
        {"type": "snapshot"},
        [],
    ],
)
def test_push_decoding_is_strict(obj: object) -> None:
    with pytest.raises(FederationProtocolError):
        decode_push(json.dumps(obj).encode())


def test_a_site_may_answer_only_ack_or_nack() -> None:
    body = {
        "type": "snapshot",
        "origin_site": "b",
        "epoch": "e",
        "version": 1,
        "final": True,
        "services": [],
    }
    with pytest.raises(FederationProtocolError, match="ack or nack"):
        decode_reply(json.dumps(body).encode())


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    reader = FrameReader(decode_push, max_message_bytes=max_frame_bytes(1024))
    with pytest.raises(FederationProtocolError, match="exceeds"):
        reader.feed(struct.pack(">I", max_frame_bytes(1024) + 1))
    assert reader.buffered == 0
    with pytest.raises(FederationProtocolError, match="exceeds"):
        encode_push(FleetPush("hq", "e", 1, "x" * 10_000), max_document_bytes=1024)


# -- sender -----------------------------------------------------------------------------------


def test_one_version_in_flight_and_only_the_newest_after_a_burst() -> None:
    s = PushSession("hq", "ep")
    assert s.next_message(0.0) is None  # nothing to send yet
    s.set_document(DOC)
    first = s.next_message(1.0)
    assert first is not None and first.version == 1 and first.document == DOC.canonical_json()
    s.set_document(DOC2)
    s.set_document(DOC)
    s.set_document(DOC2)
    assert s.next_message(2.0) is None  # one in flight
    assert s.oldest_unacked_at() == 1.0
    answer = s.receive(Ack("ep", 1))
    assert answer == Answer(DOC.version, True, None)
    second = s.next_message(3.0)
    assert second is not None and second.version == 2
    assert second.document == DOC2.canonical_json()  # the newest, once
    assert s.receive(Nack("ep", 2, "why")) == Answer(DOC2.version, False, "why")
    assert s.next_message(4.0) is None  # answered (rejected): not sent again on this stream
    assert s.oldest_unacked_at() is None


@pytest.mark.parametrize("reply", [Ack("ep", 2), Ack("other", 1), Nack("ep", 9, "x")])
def test_a_reply_to_no_push_in_flight_is_a_protocol_error(reply: Ack | Nack) -> None:
    s = PushSession("hq", "ep")
    s.set_document(DOC)
    assert s.next_message(0.0) is not None
    with pytest.raises(FederationProtocolError):
        s.receive(reply)


# -- receiver ---------------------------------------------------------------------------------


def test_receiver_takes_only_the_authority_and_newer_pushes() -> None:
    r = ReceiveSession("hq")
    r.receive(FleetPush("hq", "e1", 1, ""))
    r.receive(FleetPush("hq", "e1", 2, ""))
    with pytest.raises(FederationProtocolError, match="not after"):
        r.receive(FleetPush("hq", "e1", 2, ""))
    r.receive(FleetPush("hq", "e2", 1, ""))  # a new epoch: the authority restarted
    with pytest.raises(FederationProtocolError, match="authority is 'hq'"):
        r.receive(FleetPush("b", "e2", 5, ""))


def test_decide_rejects_what_does_not_decode_and_acks_what_runs() -> None:
    push = FleetPush("hq", "e", 1, DOC.canonical_json())
    assert decide(push, None, max_bytes=4096, max_resources=10)[:3] == ("apply", DOC, DOC.version)
    assert decide(push, DOC.version, max_bytes=4096, max_resources=10)[0] == "ack"
    decision, doc, _, problems = decide(push, None, max_bytes=10, max_resources=10)
    assert (decision, doc) == ("reject", None) and "larger than 10 bytes" in problems[0].message
    bad = FleetPush("hq", "e", 1, '{"resources":[{"kind":"nope","name":"x"}]}')
    decision, _, _, problems = decide(bad, None, max_bytes=4096, max_resources=10)
    assert decision == "reject" and problems[0].path == "fleet.resources[0].kind"


def test_reply_and_reason() -> None:
    push = FleetPush("hq", "e", 7, "")
    assert reply_for(push, None) == Ack("e", 7)
    reason = rejection_reason("abc", [Problem("fleet.x", "bad"), Problem("fleet.y", "worse")])
    assert reason == "version abc: fleet.x: bad; fleet.y: worse"
    assert reply_for(push, reason) == Nack("e", 7, reason)
    long = rejection_reason("abc", [Problem("p", "m" * 5000)])
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")


# -- store ------------------------------------------------------------------------------------


def test_store_compare_and_set_history_and_rollback(tmp_path: Path) -> None:
    store = SiteStore(tmp_path, max_bytes=4096, max_resources=10, keep=3)
    assert store.read_current() == EMPTY and store.history() == []
    assert store.write(DOC, EMPTY.version) == EMPTY
    with pytest.raises(Conflict):
        store.write(DOC2, EMPTY.version)  # another write came first
    assert store.read_current() == DOC
    store.write(DOC2, DOC.version)
    assert store.load_version(DOC.version) == DOC
    store.write(DOC, None)  # a rollback re-applies a kept version: it becomes the newest
    assert store.history() == [DOC2.version, DOC.version]
    with pytest.raises(AuthorityError, match="not in the history"):
        store.load_version("0123456789ab")
    with pytest.raises(AuthorityError, match="not a version"):
        store.load_version("../etc")


def test_store_keeps_a_bounded_history(tmp_path: Path) -> None:
    store = SiteStore(tmp_path, max_bytes=4096, max_resources=10, keep=3)
    versions = []
    for i in range(5):
        doc = load_document_text(
            f'[[resources]]\nkind = "policies"\nname = "p{i}"\n[resources.spec]\n'
            'allow_sites = ["*"]\n'
        )
        store.write(doc, None)
        versions.append(doc.version)
    assert store.history() == versions[-3:]
    assert sorted(p.stem for p in (tmp_path / "history").iterdir()) == sorted(versions[-3:])


def test_store_refuses_an_unusable_current(tmp_path: Path) -> None:
    (tmp_path / "current.json").write_text("{not json")
    with pytest.raises(AuthorityError, match="unusable"):
        SiteStore(tmp_path, max_bytes=4096, max_resources=10).read_current()


# -- the API's authorization -------------------------------------------------------------------

DEPLOYER = SpiffeId.parse("spiffe://a.test/ops/deployer")


def test_only_writers_write_and_reads_stay_open() -> None:
    writers = (DEPLOYER,)
    other = SpiffeId.parse("spiffe://a.test/ops/intruder")
    assert authorize("POST", "/fleet/apply", DEPLOYER, writers) is None
    assert authorize("POST", "/fleet/rollback", DEPLOYER, writers) is None
    refused = authorize("POST", "/fleet/apply", other, writers)
    assert refused is not None and refused[0] == 403 and str(other) in refused[1]
    # Same path in another trust domain is another identity.
    assert authorize(
        "POST", "/fleet/apply", SpiffeId.parse("spiffe://b.test/ops/deployer"), writers
    )
    assert authorize("GET", "/fleet/current", other, writers) is None
    assert authorize("GET", "/fleet/apply", DEPLOYER, writers) == (
        405,
        "/fleet/apply does not take GET",
    )
    assert authorize("POST", "/elsewhere", DEPLOYER, writers)[0] == 404  # type: ignore[index]


# -- config -----------------------------------------------------------------------------------


def load_problems(text: str) -> list[tuple[str, str]]:
    try:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    except ConfigInvalid as exc:
        return [(p.path, p.message) for p in exc.problems]
    return []


BASE = """
[site]
name = "a"
trust_domain = "a.test"
[identity]
svid = "svid.pem"
key = "key.pem"
bundles = [{ trust_domain = "a.test", path = "bundle.pem" }]
[[peers]]
name = "hq"
address = "127.0.0.1"
port = 9000
spiffe_id = "spiffe://hq.test/gateway"
"""


@pytest.mark.parametrize(
    ("fleet", "expected"),
    [
        ('source = "site"', {"fleet.authority_site": "needs the name"}),
        ('source = "site"\nauthority_site = "nowhere"', {"fleet.authority_site": "'nowhere'"}),
        ('source = "site"\nauthority_site = "a"', {"fleet.store_dir": "directory"}),
        (
            'source = "site"\nauthority_site = "hq"\nwriters = ["spiffe://a.test/x"]',
            {"fleet.writers": "only used at the authority"},
        ),
        (
            'source = "site"\nauthority_site = "a"\nstore_dir = "s"\nwriters = ["spiffe://a.test"]',
            {"fleet.writers[0]": "needs a path"},
        ),
        ('authority_site = "hq"', {"fleet.authority_site": "only used with source = 'site'"}),
        (
            'source = "site"\nauthority_site = "a"\nstore_dir = "s"\napi_address = "x"',
            {"fleet.api_address": "not an IP"},
        ),
    ],
)
def test_site_source_config_problems(fleet: str, expected: dict[str, str]) -> None:
    problems = load_problems(BASE + "[fleet]\n" + fleet + "\n")
    for path, text in expected.items():
        assert any(p == path and text in m for p, m in problems), problems


@pytest.mark.parametrize(
    "fleet",
    [
        'source = "site"\nauthority_site = "hq"',
        'source = "site"\nauthority_site = "hq"\nstore_dir = "cache"',
        'source = "site"\nauthority_site = "a"\nstore_dir = "s"\n'
        'writers = ["spiffe://a.test/ops/deployer"]\napi_port = 0',
    ],
)
def test_site_source_configs_that_hold(fleet: str) -> None:
    problems = load_problems(BASE + "[fleet]\n" + fleet + "\n")
    assert not [p for p in problems if p[0].startswith("fleet")], problems
