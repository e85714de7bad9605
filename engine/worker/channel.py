"""Messages between the worker and the child process of one attempt.

A :class:`Channel` frames Python objects over a connected stream socket: a 4-byte big-endian
length, then the pickled object. Both ends are this package's own code in processes forked
from the same worker, so pickle is safe here and carries the frozen report dataclasses as
they are. One thread may send while another receives; two threads must not send at once.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import time
from typing import Any

_HEADER = struct.Struct(">I")
_READ_BYTES = 256 * 1024
#: The largest message accepted, far above any report the limits allow (a result is at most
#: ``max_result_bytes``): a bigger length means a corrupt stream.
MAX_MESSAGE_BYTES = 1 << 30


class ChannelClosed(Exception):
    """The other end closed the channel (or died): no more messages will come."""


class Channel:
    """Length-prefixed pickled messages over a stream socket.

    Args:
        sock: a connected ``AF_UNIX``/``SOCK_STREAM`` socket; the channel owns it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(True)
        self._buffer = bytearray()
        self._closed = False

    def fileno(self) -> int:
        """The socket's file descriptor (for selectors)."""
        return self.sock.fileno()

    def send(self, message: Any) -> None:
        """Sends one message, blocking until the socket took all of it.

        Raises:
            ChannelClosed: the other end is gone.
        """
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.sock.sendall(_HEADER.pack(len(body)) + body)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise ChannelClosed(f"the channel is closed: {exc}") from exc

    def recv(self, timeout: float | None) -> Any | None:
        """The next message, or ``None`` when none came within ``timeout`` seconds.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes.

        Raises:
            ChannelClosed: the other end closed the channel before a whole message came.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._take()
            if message is not None:
                return message[0]
            if self._closed:
                raise ChannelClosed("the other end closed the channel")
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self.sock], [], [], wait)
            except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
                continue
            if not ready:
                return None
            try:
                data = self.sock.recv(_READ_BYTES)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                self._closed = True
            self._buffer += data

    def _take(self) -> tuple[Any] | None:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        if size > MAX_MESSAGE_BYTES:
            raise ChannelClosed(f"corrupt channel: a message of {size} bytes announced")
        end = _HEADER.size + size
        if len(buffer) < end:
            return None
        message = pickle.loads(bytes(buffer[_HEADER.size : end]))
        del buffer[:end]
        return (message,)

    def close(self) -> None:
        """Closes the socket (the other end then sees :class:`ChannelClosed`)."""
        self.sock.close()
