"""The process tier's frames: round trips, and each malformed frame refused before it costs."""

from __future__ import annotations

import io
import json
import math
import socket
import struct
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.isolation import wire

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_any_json_value_round_trips(value: object) -> None:
    frame = wire.encode(value)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert wire.read_frame(io.BytesIO(frame).read) == value


@given(st.lists(json_values, min_size=1, max_size=5), st.integers(min_value=1, max_value=7))
def test_frames_back_to_back_read_in_any_chunking(values: list[object], chunk: int) -> None:
    stream = io.BytesIO(b"".join(wire.encode(value) for value in values))
    read = lambda n: stream.read(min(n, chunk))  # noqa: E731 - a short-reading socket
    assert [wire.read_frame(read) for _ in values] == values
    with pytest.raises(wire.ChannelClosed) as closed:
        wire.read_frame(read)
    assert closed.value.clean


@given(st.binary(max_size=64))
def test_random_payloads_are_messages_or_protocol_errors(payload: bytes) -> None:
    try:
        expected = json.loads(payload, parse_constant=_not_json)
    except ValueError:  # not JSON (UnicodeDecodeError included), so a ProtocolError is due
        with pytest.raises(wire.ProtocolError, match=r"^a frame"):
            wire.decode(payload)
    else:
        assert wire.decode(payload) == expected


def _not_json(text: str) -> object:
    raise ValueError(f"{text} is Python's, not JSON's")


def _read(data: bytes) -> object:
    return wire.read_frame(io.BytesIO(data).read)


def test_a_huge_announced_length_is_refused_before_reading() -> None:
    reads: list[int] = []
    stream = io.BytesIO(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)

    def read(n: int) -> bytes:
        reads.append(n)
        return stream.read(n)

    with pytest.raises(wire.ProtocolError, match="4294967295 bytes announced"):
        wire.read_frame(read)
    assert reads == [4]


def test_an_empty_frame_is_refused() -> None:
    with pytest.raises(wire.ProtocolError, match="empty frame"):
        _read(struct.pack(">I", 0))


def test_a_truncated_frame_is_an_unclean_close() -> None:
    frame = wire.encode({"id": 1, "ok": "x" * 100})
    with pytest.raises(wire.ChannelClosed, match="middle of a frame") as closed:
        _read(frame[:50])
    assert not closed.value.clean
    with pytest.raises(wire.ChannelClosed, match="middle of a frame"):
        _read(frame[:2])


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not JSON"),
        (b"1" * 100_000, "100000 digits"),
        (b"NaN", "not JSON"),
        (b"[Infinity]", "not JSON"),
        (b"{'a': 1}", "not JSON"),
        (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.", "not UTF-8|not JSON"),
    ],
    ids=["utf8", "deep", "huge-int", "nan", "infinity", "python-literal", "pickle"],
)
def test_malformed_payloads_are_protocol_errors(payload: bytes, why: str) -> None:
    with pytest.raises(wire.ProtocolError, match=why):
        _read(struct.pack(">I", len(payload)) + payload)


@pytest.mark.parametrize("value", [math.nan, math.inf, {1, 2}, b"bytes", object()])
def test_what_json_cannot_carry_is_refused_on_encode(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        wire.encode({"ok": value})


def test_a_frame_over_the_limit_is_refused_on_both_sides() -> None:
    with pytest.raises(wire.ProtocolError, match="over the limit of 100"):
        wire.encode("x" * 200, max_frame=100)
    with pytest.raises(wire.ProtocolError, match="over the limit of 100"):
        wire.read_frame(io.BytesIO(wire.encode("x" * 200)).read, max_frame=100)


def test_a_channel_carries_messages_over_a_real_socketpair() -> None:
    left, right = socket.socketpair()
    a, b = wire.Channel(left), wire.Channel(right)
    big = {"data": "y" * (3 << 20)}  # larger than one recv returns

    sender = threading.Thread(target=lambda: [a.send(big), a.send([1, 2]), a.close()])
    sender.start()
    assert b.receive() == big
    assert b.receive() == [1, 2]
    with pytest.raises(wire.ChannelClosed):
        b.receive()
    sender.join(timeout=10)
    b.close()


def test_a_pickle_frame_is_refused_not_unpickled(capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    class Bomb:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("unpickled!",))

    payload = pickle.dumps(Bomb())
    with pytest.raises(wire.ProtocolError):
        _read(struct.pack(">I", len(payload)) + payload)
    assert "unpickled!" not in capsys.readouterr().out
