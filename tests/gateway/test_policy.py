"""Cross-site allow lists: local callers pass, others need a matching policy (default deny)."""

from __future__ import annotations

import pytest

from discovery.model import ServiceName
from foundation.spiffe_id import SpiffeId
from gateway.config.model import PolicyConfig
from gateway.http.exchange import CallContext
from gateway.policy import PolicyDenied, allowed, check

API = ServiceName("api", "payments")
WEB = SpiffeId.parse("spiffe://east.example/ns/shop/sa/web")
BATCH = SpiffeId.parse("spiffe://east.example/ns/shop/sa/batch")


def ctx(site: str, caller: SpiffeId | None = None, peer: str | None = "east") -> CallContext:
    return CallContext(caller_site=site, caller_id=caller, deadline=0.0, from_peer=peer)


def test_local_callers_are_always_allowed() -> None:
    assert allowed((), API, ctx("here", peer=None), "here")


def test_other_sites_are_denied_by_default() -> None:
    assert not allowed((), API, ctx("east"), "here")
    assert not allowed(
        (PolicyConfig(service="other", allow_sites=("*",)),), API, ctx("east"), "here"
    )


def test_a_peer_cannot_pass_its_caller_off_as_local() -> None:
    assert not allowed((), API, ctx("here", peer="east"), "here")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (PolicyConfig(service="api", namespace="payments", allow_sites=("east",)), True),
        (PolicyConfig(service="*", namespace="payments", allow_sites=("east",)), True),
        (PolicyConfig(service="api", namespace="*", allow_sites=("*",)), True),
        (PolicyConfig(allow_sites=("west",)), False),
        (PolicyConfig(service="api", namespace="default", allow_sites=("east",)), False),
        (PolicyConfig(service="api", allow_ids=(WEB,)), True),
        (PolicyConfig(service="api", allow_ids=(BATCH,)), False),
        (PolicyConfig(service="api", namespace="payments"), False),
    ],
)
def test_matching_policies(policy: PolicyConfig, expected: bool) -> None:
    assert allowed((policy,), API, ctx("east", WEB), "here") is expected


def test_caller_id_rule_needs_an_authenticated_caller() -> None:
    policy = PolicyConfig(service="api", namespace="payments", allow_ids=(WEB,))
    assert not allowed((policy,), API, ctx("east", None), "here")


def test_any_matching_policy_suffices() -> None:
    policies = (
        PolicyConfig(service="api", namespace="payments", allow_sites=("west",)),
        PolicyConfig(namespace="payments", allow_ids=(WEB,)),
    )
    assert allowed(policies, API, ctx("east", WEB), "here")
    assert allowed(policies, API, ctx("west"), "here")
    assert not allowed(policies, API, ctx("north", BATCH), "here")


def test_check_raises_403_naming_who_and_what() -> None:
    with pytest.raises(PolicyDenied) as info:
        check((), API, ctx("east", WEB), "here")
    assert info.value.http_status == 403
    assert (
        "'east'" in str(info.value)
        and str(WEB) in str(info.value)
        and "api.payments" in str(info.value)
    )
