"""Frames between the host and a process-tier worker: a 4-byte big-endian length, then UTF-8 JSON.

Standard library only: the worker loads this file by path before any plugin code runs, maybe under
another interpreter than the host's. JSON and never pickle, so all a hostile worker can send the
host is data; and each limit is checked before the bytes it governs are read or parsed.

Messages are JSON objects. The host's first frame is ``{"op": "load", "protocol": PROTOCOL, ...}``;
the worker answers ``{"op": "hello", "protocol": PROTOCOL, "hooks": [...], ...}``. After that the
host sends requests ``{"id": N, "op": "call" | "ping" | "stop", ...}`` and the worker answers each
with ``{"id": N, "ok": value}`` or ``{"id": N, "error": {"type", "message", "traceback"}}``.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Callable
from typing import Any

PROTOCOL = 1
#: The largest frame either side sends or accepts: a frame announcing more is refused unread.
MAX_FRAME = 16 * 1024 * 1024
#: Integers longer than this are refused: parsing one is quadratic in its length on 3.10.
MAX_DIGITS = 4300

_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the protocol: a bad length, bytes that are not JSON, an unknown request."""


class ChannelClosed(ProtocolError):
    """The peer closed the channel, between frames (``clean``) or in the middle of one."""

    def __init__(self, message: str, *, clean: bool) -> None:
        super().__init__(message)
        self.clean = clean


def encode(message: object, *, max_frame: int = MAX_FRAME) -> bytes:
    """``message`` as one frame. Raises TypeError or ValueError for what JSON cannot carry
    (including NaN and infinities, which are not JSON), RecursionError for a value nested too
    deeply, ProtocolError for a frame too large."""
    data = _ENCODER.encode(message).encode("ascii")
    if len(data) > max_frame:
        raise ProtocolError(f"a frame of {len(data)} bytes is over the limit of {max_frame}")
    return _HEADER.pack(len(data)) + data


def decode(payload: bytes) -> Any:
    """The message in one frame's payload; anything else than valid JSON is a ProtocolError."""
    try:
        text = payload.decode("utf-8")
        return _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"a frame that is not UTF-8: {exc}") from None
    except RecursionError:
        raise ProtocolError("a frame nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, and _int's and _constant's refusals
        raise ProtocolError(f"a frame that is not JSON: {exc}") from None


def _int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_DIGITS:
        raise ValueError(f"an integer of {digits} digits (the limit is {MAX_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: JSON has no infinity, and encode would refuse to send it on
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


# Made once: json.dumps and json.loads with any option build a new coder per call, which costs
# more than coding a small message. ASCII escapes carry any str, lone surrogates (from
# undecodable file names) included.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def length(header: bytes, *, max_frame: int = MAX_FRAME) -> int:
    """The payload length a header announces, refused before anything is allocated for it."""
    size: int = _HEADER.unpack(header)[0]
    if size == 0:
        raise ProtocolError("an empty frame")
    if size > max_frame:
        raise ProtocolError(f"a frame of {size} bytes announced, over the limit of {max_frame}")
    return size


def read_frame(read: Callable[[int], bytes], *, max_frame: int = MAX_FRAME) -> Any:
    """One message, read through ``read(n)`` (which returns at most n bytes, b"" at the end)."""
    header = _read_exactly(read, _HEADER.size, between_frames=True)
    return decode(_read_exactly(read, length(header, max_frame=max_frame), between_frames=False))


def _read_exactly(read: Callable[[int], bytes], size: int, *, between_frames: bool) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = read(min(left, 1 << 20))
        if not chunk:
            clean = between_frames and left == size
            raise ChannelClosed(
                "the peer closed the channel" + ("" if clean else " in the middle of a frame"),
                clean=clean,
            )
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Channel:
    """Frames over a connected stream socket. Not thread-safe: callers hold their own locks.

    Reads are buffered: one ``recv`` usually brings a whole answer, header and payload.
    """

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self._buffer = b""

    def send(self, message: object) -> None:
        self.sock.sendall(encode(message, max_frame=self.max_frame))

    def receive(self) -> Any:
        """The next message; raises ChannelClosed at the end, socket.timeout past the socket's.

        A timeout loses nothing, even in the middle of a frame: what was read stays buffered.
        """
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            buffer = self._fill(buffer, _HEADER.size)
        end = _HEADER.size + length(buffer[: _HEADER.size], max_frame=self.max_frame)
        if len(buffer) < end:
            buffer = self._fill(buffer, end)
        self._buffer = buffer[end:]
        return decode(buffer[_HEADER.size : end])

    def _fill(self, buffer: bytes, size: int) -> bytes:
        chunks, have = [buffer], len(buffer)
        try:
            while have < size:
                # At least a whole small answer per call; at most 1 MiB, however large the frame.
                chunk = self.sock.recv(max(min(size - have, 1 << 20), 1 << 16))
                if not chunk:
                    clean = have == 0
                    raise ChannelClosed(
                        "the peer closed the channel"
                        + ("" if clean else " in the middle of a frame"),
                        clean=clean,
                    )
                chunks.append(chunk)
                have += len(chunk)
        finally:
            self._buffer = b"".join(chunks)
        return self._buffer

    def close(self) -> None:
        self.sock.close()
