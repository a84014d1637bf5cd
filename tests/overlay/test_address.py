"""L7 address parsing: forms, limits, case, trailing dot, ports, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.model import ServiceName
from foundation.errors import DownstreamError
from overlay.address import (
    AddressError,
    L7Address,
    NotInMeshError,
    parse_authority,
)


def test_any_site_form() -> None:
    a = L7Address.parse("api.payments.isthmus")
    assert (a.service, a.namespace, a.site, a.mesh_domain) == ("api", "payments", None, "isthmus")
    assert not a.is_pinned
    assert a.service_name == ServiceName("api", "payments")
    assert str(a) == "api.payments.isthmus"


def test_pinned_form() -> None:
    a = L7Address.parse("api.payments.aws-east.isthmus")
    assert a.site == "aws-east"
    assert a.is_pinned
    assert a.any_site() == L7Address("api", "payments")
    assert L7Address("api", "payments").pinned_to("aws-east") == a


def test_multi_label_mesh_domain_is_stripped_as_suffix() -> None:
    any_site = L7Address.parse("api.default.mesh.example.com", mesh_domain="mesh.example.com")
    assert any_site.site is None
    assert str(any_site) == "api.default.mesh.example.com"
    pinned = L7Address.parse("api.default.gcp.mesh.example.com", mesh_domain="mesh.example.com")
    assert pinned.site == "gcp"


def test_case_is_folded_and_trailing_dot_dropped() -> None:
    a = L7Address.parse("API.Default.ISTHMUS.")
    assert str(a) == "api.default.isthmus"
    assert a == L7Address.parse("api.default.isthmus")


def test_constructor_rejects_non_canonical_labels() -> None:
    with pytest.raises(AddressError):
        L7Address("API", "default")
    with pytest.raises(AddressError):
        L7Address("api", "default", mesh_domain="Isthmus")


def test_non_ascii_is_rejected_not_folded() -> None:
    # U+212A KELVIN SIGN lowercases to ASCII "k": must not become "kube".
    with pytest.raises(AddressError, match="ASCII"):
        L7Address.parse("\u212aube.default.isthmus")


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "isthmus",
        "api.isthmus",  # one label before the mesh domain
        "a.b.c.d.isthmus",  # four labels
        "api..isthmus",
        "-api.default.isthmus",
        "api-.default.isthmus",
        "a_b.default.isthmus",
        "api.default.isthmus..",
        "a" * 64 + ".default.isthmus",
        "api default.isthmus",
        "api.default.isthmus\x00",
    ],
)
def test_rejects_bad_names(text: str) -> None:
    with pytest.raises(AddressError):
        L7Address.parse(text)


def test_not_in_mesh_is_its_own_error() -> None:
    with pytest.raises(NotInMeshError):
        L7Address.parse("api.default.example.com")
    with pytest.raises(NotInMeshError):
        L7Address.parse("api.default.xisthmus")


def test_whole_name_limit_is_253_bytes() -> None:
    mesh = ".".join(["m" * 63] * 3)  # 191 bytes
    ok = "s" * 30 + "." + "n" * 30 + "." + mesh  # 30+1+30+1+191 = 253
    assert len(ok) == 253
    assert str(L7Address.parse(ok, mesh_domain=mesh)) == ok
    assert str(L7Address.parse(ok + ".", mesh_domain=mesh)) == ok
    with pytest.raises(AddressError, match="253"):
        L7Address.parse("s" + ok, mesh_domain=mesh)
    with pytest.raises(AddressError, match="253"):
        L7Address("s" * 31, "n" * 30, mesh_domain=mesh)


def test_errors_map_to_400() -> None:
    with pytest.raises(DownstreamError) as info:
        L7Address.parse("nope")
    assert info.value.http_status == 400


def test_parse_authority() -> None:
    assert parse_authority("api.default.isthmus:8080") == (L7Address("api", "default"), 8080)
    assert parse_authority("api.default.isthmus") == (L7Address("api", "default"), None)
    assert parse_authority("API.default.isthmus.:443") == (L7Address("api", "default"), 443)


@pytest.mark.parametrize(
    "text",
    [
        "api.default.isthmus:",
        "api.default.isthmus:0",
        "api.default.isthmus:65536",
        "api.default.isthmus:123456",
        "api.default.isthmus:+80",
        "api.default.isthmus:8 0",
        "api.default.isthmus:80:80",
        "api.default.isthmus:\u0668\u0660",  # Arabic-Indic digits are not ASCII digits
        "user@api.default.isthmus",
        "[::1]:80",
    ],
)
def test_parse_authority_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        parse_authority(text)


label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
mesh_domains = st.lists(label, min_size=1, max_size=3).map(".".join)


@given(label, label, st.none() | label, mesh_domains)
def test_round_trip(service: str, namespace: str, site: str | None, mesh: str) -> None:
    a = L7Address(service, namespace, site, mesh)
    assert L7Address.parse(str(a), mesh_domain=mesh) == a
    assert L7Address.parse(str(a).upper() + ".", mesh_domain=mesh) == a
    assert parse_authority(f"{a}:8443", mesh_domain=mesh) == (a, 8443)


@given(st.text(max_size=300))
def test_parse_never_crashes(text: str) -> None:
    try:
        a = L7Address.parse(text)
    except AddressError:
        return
    assert str(a) == text.lower().removesuffix(".")


@given(
    st.text(alphabet=st.sampled_from("abcAB.-:0189@[]_ \u212a"), max_size=80).map(
        lambda s: s + ".default.isthmus" if len(s) % 2 else s
    )
)
def test_parse_authority_never_crashes(text: str) -> None:
    try:
        a, port = parse_authority(text)
    except AddressError:
        return
    assert port is None or 1 <= port <= 65535
    assert L7Address.parse(str(a)) == a
