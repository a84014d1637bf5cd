"""What survives a reload of [[service_traffic]]: the pure carry-over rules, and the outlier
detector's swap (ejections kept, shortened or lifted; published and counted consistently)."""

from __future__ import annotations

from dataclasses import replace

from discovery.model import Endpoint, EndpointKey, ServiceName
from gateway.cluster.health_check import CheckPolicy, CheckState
from gateway.cluster.outlier import EndpointHealth, OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.cluster.traffic_carry import carry_checks, carry_ejection

API = ServiceName("api", "default")
DB = ServiceName("db", "default")
POLICY = OutlierPolicy(consecutive_5xx=2, base_ejection_time=30.0, max_ejection_time=300.0)
EJECTED = EndpointHealth(ejections=2, ejected_until=160.0, reason="outlier: 2 consecutive 5xx")


def test_an_ejection_stays_when_the_new_settings_allow_it() -> None:
    assert carry_ejection(EJECTED, POLICY, now=100.0) == EJECTED  # 2 x 30 s from now: 160
    assert carry_ejection(EJECTED, OutlierPolicy(consecutive_5xx=9), now=100.0) == EJECTED


def test_an_ejection_is_never_longer_than_the_new_settings_would_eject_now() -> None:
    short = OutlierPolicy(base_ejection_time=5.0, max_ejection_time=8.0)
    carried = carry_ejection(EJECTED, short, now=100.0)
    assert carried is not None and carried.ejected_until == 108.0  # min(5 x 2, 8)
    assert carried.ejections == 2 and carried.reason == EJECTED.reason


def test_detection_off_forgets_the_record_and_lifts_the_ejection() -> None:
    assert carry_ejection(EJECTED, None, now=100.0) is None


def test_a_counter_whose_detection_is_off_starts_from_zero() -> None:
    record = EndpointHealth(consecutive_5xx=1, consecutive_connect_failures=3)
    no_5xx = OutlierPolicy(consecutive_5xx=0)
    assert carry_ejection(record, no_5xx, now=0.0) == EndpointHealth(consecutive_connect_failures=3)
    neither = OutlierPolicy(consecutive_5xx=0, consecutive_connect_failures=0)
    assert carry_ejection(record, neither, now=0.0) is None  # nothing left to remember
    # A lower threshold ejects nothing by itself: the counters wait for the next failure.
    assert carry_ejection(record, OutlierPolicy(consecutive_connect_failures=2), now=0.0) == record


def _key(service: ServiceName, port: int) -> EndpointKey:
    return EndpointKey(service, "127.0.0.1", port)


def test_health_check_states_by_what_changed_for_the_service() -> None:
    check = CheckPolicy(interval=10.0, unhealthy_threshold=3)
    changed = CheckPolicy(interval=1.0, unhealthy_threshold=1)
    old_for = {API: check, DB: check}
    down = CheckState(False, 1, 0, "health check: 3 failed probes in a row")
    states = {_key(API, 1): down, _key(API, 2): CheckState(True, 0, 2), _key(DB, 1): down}
    due = {_key(API, 1): 50.0, _key(API, 2): 50.0, _key(DB, 1): 50.0, _key(DB, 9): 55.0}

    # Unchanged for api, removed for db: api keeps state and schedule, db's marks go.
    kept, kept_due = carry_checks(states, due, old_for.get, {API: check}.get)
    assert kept == {_key(API, 1): down, _key(API, 2): CheckState(True, 0, 2)}
    assert kept_due == {_key(API, 1): 50.0, _key(API, 2): 50.0}

    # Changed for api: healthy or not stays, the streaks start afresh, probed at once.
    kept, kept_due = carry_checks(states, due, old_for.get, {API: changed, DB: check}.get)
    assert kept[_key(API, 1)] == CheckState(False, 0, 0, down.reason)
    assert kept[_key(API, 2)] == CheckState()
    assert kept[_key(DB, 1)] == down
    assert kept_due == {_key(DB, 1): 50.0, _key(DB, 9): 55.0}


class HandClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _eject(detector: OutlierDetector, ep: Endpoint) -> None:
    for _ in range(POLICY.consecutive_5xx):
        detector.record(ep, "5xx", service_size=2)


def test_the_detector_keeps_ejections_across_an_unrelated_change() -> None:
    clock = HandClock()
    detector = OutlierDetector(lambda _s: POLICY, clock=clock)
    ep = Endpoint(API, "127.0.0.1", 1)
    _eject(detector, ep)
    assert list(detector.ejections.latest) == [ep.key]
    published, counted = detector.ejections.count, dict(detector.ejected_total)
    clock.now = 10.0
    lifted = detector.set_policy({API: POLICY, DB: OutlierPolicy()}.get)
    assert lifted == 0
    assert detector.routable(API, (ep,)) == ()  # still out
    assert detector.ejections.count == published  # nothing changed: nothing republished
    assert detector.ejected_total == counted  # the same ejection, not counted again
    # Failures under the new policy still count towards the next ejection.
    other = Endpoint(API, "127.0.0.1", 2)
    detector.record(other, "5xx", service_size=4)
    detector.set_policy({API: OutlierPolicy(consecutive_5xx=2, max_ejected_percent=50)}.get)
    detector.record(other, "5xx", service_size=4)
    assert set(detector.ejections.latest) == {ep.key, other.key}
    assert detector.ejected_total == {"api.default": 2}


def test_the_detector_shortens_and_lifts_ejections_and_republishes() -> None:
    clock = HandClock()
    detector = OutlierDetector(lambda _s: POLICY, clock=clock)
    ep = Endpoint(API, "127.0.0.1", 1)
    _eject(detector, ep)
    assert detector.ejections.latest[ep.key].ejected_until == 30.0
    published = detector.ejections.count
    clock.now = 1.0
    detector.set_policy(lambda _s: replace(POLICY, base_ejection_time=5.0, max_ejection_time=5.0))
    assert detector.ejections.count == published + 1  # the view learns the new end at once
    assert detector.ejections.latest[ep.key].ejected_until == 6.0
    clock.now = 6.0
    assert detector.routable(API, (ep,)) == (ep,)
    # Detection off: an ejection in force is lifted and published, not silently forgotten.
    clock.now = 7.0
    _eject(detector, ep)
    assert list(detector.ejections.latest) == [ep.key]
    assert detector.set_policy(lambda _s: None) == 1
    assert dict(detector.ejections.latest) == {}
    assert detector.routable(API, (ep,)) == (ep,)
    assert detector.health(ep.key) is None
    assert detector.ejected_total == {"api.default": 2}
