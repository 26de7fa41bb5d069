"""The process tier's wire frames, from both sides: anything a worker (or the host) could send.

Documented (helixhooks/isolation/wire.py): ``decode`` gives the message or a ProtocolError;
``read_frame`` and ``Channel.receive`` give messages, or a ProtocolError (ChannelClosed at the
end), and refuse an announced length over ``max_frame`` before reading it; ``encode`` gives a
frame, or TypeError / ValueError for what JSON cannot carry, or a ProtocolError for a frame too
large. tests/test_wire.py has the round trips of ordinary values and each malformed frame
named; these run byte streams of frames, junk and truncations through every reader.
"""

from __future__ import annotations

import io
import math
import socket
import struct
import threading
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helixhooks.isolation import wire

# Every JSON value, with ints up to the decoder's digit limit; NaN and infinities are not JSON.
_digits = 10**wire.MAX_DIGITS - 1
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**300), 10**300)
    | st.sampled_from([_digits, 2**53, -(2**63)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# What a Python side might try to send: JSON values, and what JSON cannot carry.
python_values = st.recursive(
    json_values | st.floats() | st.binary(max_size=4) | st.sampled_from([object(), {1, 2}, 1j]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=8,
)
MAX_FRAME = 512


def _header(size: int) -> bytes:
    return struct.pack(">I", size)


@st.composite
def pieces(draw: st.DrawFn) -> bytes:
    """A piece of a stream: a good frame, a frame cut short, a header over junk, or junk."""
    kind = draw(st.sampled_from(["frame", "frame", "cut", "header", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=16))
    if kind == "header":
        size = draw(st.integers(0, 2 * MAX_FRAME) | st.sampled_from([0xFFFFFFFF, MAX_FRAME + 1]))
        return _header(size) + draw(st.binary(max_size=min(size, 32)))
    try:
        frame = wire.encode(draw(json_values))
    except (ValueError, wire.ProtocolError):  # an int too long to write (see _digits)
        frame = wire.encode(None)
    return frame[: draw(st.integers(0, len(frame) - 1))] if kind == "cut" else frame


@st.composite
def mangled_payloads(draw: st.DrawFn) -> bytes:
    """A JSON text with a few bytes inserted or deleted: mostly almost JSON."""
    payload = bytearray(wire.encode(draw(json_values))[4:])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(payload)))
        if draw(st.booleans()):
            payload[at:at] = draw(
                st.binary(min_size=1, max_size=3) | st.sampled_from([b"e9", b"\\u", b"-", b'"'])
            )
        else:
            del payload[at : at + draw(st.integers(1, 4))]
    return bytes(payload)


def _is_json(value: Any) -> bool:
    """Whether ``value`` is what a JSON text decodes to (no NaN or infinity: those are not JSON)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_is_json, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, str))


def read_all(stream: bytes, chunks: list[int]) -> list[Any]:
    """Every message in ``stream`` read through ``read(n)`` returning short reads of the sizes
    in ``chunks``, up to the ProtocolError that ends it (ChannelClosed at the end)."""
    source = io.BytesIO(stream)
    turns = iter(chunks)
    asked: list[int] = []

    def read(size: int) -> bytes:
        asked.append(size)
        return source.read(min(size, next(turns, size)))

    messages = []
    while True:  # each frame takes at least 5 bytes of a finite stream: the loop ends
        try:
            messages.append(wire.read_frame(read, max_frame=MAX_FRAME))
        except wire.ProtocolError:
            break
    # No read asks for more than a header or a payload within the limit.
    assert all(0 < size <= MAX_FRAME for size in asked), asked
    return messages


@given(st.lists(pieces(), max_size=6), st.lists(st.integers(1, 9), max_size=20))
@example([_header(0xFFFFFFFF) + b"x" * 8], [])
@example([wire.encode({"id": 1, "ok": [1, 2]}), _header(3) + b"{}"], [1])
def test_any_byte_stream_reads_as_messages_until_a_protocol_error(
    stream: list[bytes], chunks: list[int]
) -> None:
    for message in read_all(b"".join(stream), chunks):
        assert _is_json(message), message


@given(st.lists(json_values, min_size=1, max_size=4), st.lists(st.integers(1, 9), max_size=20))
def test_good_frames_read_back_whatever_the_reads_return(
    values: list[Any], chunks: list[int]
) -> None:
    frames = []
    for value in values:
        try:
            frames.append(wire.encode(value, max_frame=MAX_FRAME))
        except wire.ProtocolError:
            return  # over this test's small limit: refused on the way out, as documented
    assert read_all(b"".join(frames), chunks) == values


@given(st.binary(max_size=64) | mangled_payloads())
@example(b"[" * 100_000)
@example(b"-" + b"1" * (wire.MAX_DIGITS + 1))
@example(b'"\\ud800"')
@example(b"\xef\xbb\xbf{}")
def test_any_payload_decodes_to_json_or_is_a_protocol_error(payload: bytes) -> None:
    try:
        message = wire.decode(payload)
    except wire.ProtocolError:
        return
    assert _is_json(message)
    # What a worker can make the host decode, the host can send on, and it reads back the same.
    assert wire.decode(wire.encode(message)[4:]) == message


@given(python_values)
@example([[[[[]]]]] * 2)
@example(_digits)
def test_encode_gives_a_frame_or_refuses_what_json_cannot_carry(value: Any) -> None:
    try:
        frame = wire.encode(value, max_frame=MAX_FRAME)
    except (TypeError, ValueError, wire.ProtocolError):
        return
    assert wire.length(frame[:4], max_frame=MAX_FRAME) == len(frame) - 4
    assert _is_json(wire.decode(frame[4:]))


def test_encode_of_a_value_nested_past_the_recursion_limit_is_a_recursion_error() -> None:
    # Not in encode's docstring (TypeError, ValueError, ProtocolError), but what json.dumps
    # raises; proxy.py and worker.py catch it beside those.
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        wire.encode(deep)


def test_an_overflowing_number_is_not_decoded_as_an_infinity() -> None:
    # Found writing this fuzz test: decode read 1e400 as an infinity, which encode refuses.
    with pytest.raises(wire.ProtocolError):
        wire.decode(b"[1e400]")


def test_every_int_encode_writes_decodes() -> None:
    # Found writing this fuzz test: MAX_DIGITS counted a negative int's minus sign.
    assert wire.decode(wire.encode(-_digits)[4:]) == -_digits


@given(st.lists(pieces(), max_size=6))
def test_a_channel_receives_messages_until_a_protocol_error(stream: list[bytes]) -> None:
    left, right = socket.socketpair()
    right.settimeout(30)  # a hang is a failure, not a stuck suite
    receiver = wire.Channel(right, max_frame=MAX_FRAME)

    def send() -> None:
        with left:
            left.sendall(b"".join(stream))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        while True:
            try:
                message = receiver.receive()
            except wire.ProtocolError:
                break
            assert _is_json(message)
    finally:
        sender.join(timeout=30)
        receiver.close()
    assert not sender.is_alive()
