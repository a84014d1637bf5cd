"""SETTINGS values against h2's Settings (validation, error codes, resulting values), plus the
RFC rules where h2 is looser or differs (repeated parameters, ENABLE_CONNECT_PROTOCOL 1 -> 0)."""

from __future__ import annotations

import pytest
from h2.exceptions import InvalidSettingsValueError
from h2.settings import Settings as H2Settings
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec import settings as s
from overlay.h2.codec.frames import FrameReader, SettingsFrame, settings_frame

_KEYS = st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0, 7, 9, 0xFFFF])
_VALUES = st.sampled_from(
    [0, 1, 2, 100, 4096, 16383, 16384, 65535, (1 << 24) - 1, 1 << 24, (1 << 31) - 1, 1 << 31]
) | st.integers(0, (1 << 32) - 1)


def _h2_apply(pairs: tuple[tuple[int, int], ...], from_server: bool) -> H2Settings | int:
    theirs = H2Settings(client=not from_server)
    try:
        for key, value in pairs:
            theirs.validate_received_setting(key, value)
            theirs[key] = value
    except InvalidSettingsValueError as exc:
        return int(exc.error_code)
    theirs.acknowledge()
    return theirs


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=7), st.booleans())
def test_same_verdict_and_values_as_h2(params: dict[int, int], from_server: bool) -> None:
    # Distinct keys per frame: h2 applies only the first of repeated keys per acknowledgement
    # (see test_repeated_parameter_last_wins for the RFC's rule, which we follow).
    pairs = tuple(params.items())
    theirs = _h2_apply(pairs, from_server)
    try:
        ours = s.apply_settings(s.Settings(), pairs, from_server=from_server)
    except s.SettingsError as exc:
        assert exc.h2_error_code == theirs
        return
    assert not isinstance(theirs, int), theirs
    assert ours.header_table_size == theirs.header_table_size
    assert ours.initial_window_size == theirs.initial_window_size
    assert ours.max_frame_size == theirs.max_frame_size
    assert ours.max_header_list_size == theirs.max_header_list_size
    assert ours.enable_connect_protocol == bool(theirs.enable_connect_protocol)
    if s.MAX_CONCURRENT_STREAMS in params:
        assert ours.max_concurrent_streams == theirs.max_concurrent_streams
    if s.ENABLE_PUSH in params:
        assert ours.enable_push == bool(theirs.enable_push)


def test_repeated_parameter_last_wins() -> None:
    pairs = ((s.INITIAL_WINDOW_SIZE, 100), (s.INITIAL_WINDOW_SIZE, 200))
    assert s.apply_settings(s.Settings(), pairs, from_server=False).initial_window_size == 200


def test_connect_protocol_cannot_be_withdrawn() -> None:
    on = s.apply_settings(s.Settings(), ((s.ENABLE_CONNECT_PROTOCOL, 1),), from_server=True)
    assert on.enable_connect_protocol
    with pytest.raises(s.SettingsError):
        s.apply_settings(on, ((s.ENABLE_CONNECT_PROTOCOL, 0),), from_server=True)
    assert s.apply_settings(on, ((s.ENABLE_CONNECT_PROTOCOL, 1),), from_server=True) == on


@pytest.mark.parametrize(
    ("pairs", "from_server", "code"),
    [
        (((s.ENABLE_PUSH, 1),), True, 0x1),
        (((s.ENABLE_PUSH, 2),), False, 0x1),
        (((s.INITIAL_WINDOW_SIZE, 1 << 31),), False, 0x3),
        (((s.MAX_FRAME_SIZE, 16383),), False, 0x1),
        (((s.MAX_FRAME_SIZE, 1 << 24),), False, 0x1),
        (((s.ENABLE_CONNECT_PROTOCOL, 2),), True, 0x1),
    ],
)
def test_refusals(pairs: tuple[tuple[int, int], ...], from_server: bool, code: int) -> None:
    with pytest.raises(s.SettingsError) as info:
        s.apply_settings(s.Settings(), pairs, from_server=from_server)
    assert info.value.h2_error_code == code


def test_bounds_accepted() -> None:
    pairs = ((s.INITIAL_WINDOW_SIZE, (1 << 31) - 1), (s.MAX_FRAME_SIZE, (1 << 24) - 1))
    ours = s.apply_settings(s.Settings(), pairs, from_server=False)
    assert (ours.initial_window_size, ours.max_frame_size) == ((1 << 31) - 1, (1 << 24) - 1)


@given(
    st.builds(
        s.Settings,
        header_table_size=st.integers(0, 1 << 16),
        enable_push=st.booleans(),
        max_concurrent_streams=st.integers(0, 1000),
        initial_window_size=st.integers(0, (1 << 31) - 1),
        max_frame_size=st.integers(1 << 14, (1 << 24) - 1),
        max_header_list_size=st.integers(0, 1 << 20),
        enable_connect_protocol=st.booleans(),
    )
)
def test_pairs_sent_reproduce_the_settings(wanted: s.Settings) -> None:
    frame = FrameReader().receive(settings_frame(s.settings_pairs(wanted)))[0]
    assert isinstance(frame, SettingsFrame)
    got = s.apply_settings(s.Settings(), frame.settings, from_server=False)
    assert got == wanted
