"""Capture of an attempt's stdout and stderr as bounded chunks.

Bytes are decoded as UTF-8 (invalid bytes replaced), buffered per stream and sent as a chunk
when the buffer holds ``chunk_bytes`` or its oldest byte waited ``flush_interval_ms``; so a
chatty command produces a few chunks per second, not one report per line. An attempt's
captured output is capped at ``max_bytes`` over both streams: what comes after is read (so the
process never blocks on a full pipe) but dropped, and one chunk per truncated stream with
``truncated=True`` says how much was lost.

Chunk offsets count characters of that stream's captured text, so
``offset(n + 1) == offset(n) + len(chunk(n))`` and a reader can order and join chunks.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
STREAMS = (STDOUT, STDERR)


@dataclass(frozen=True)
class OutputLimits:
    """How output is cut into chunks and capped.

    Attributes:
        chunk_bytes: largest chunk, in bytes of output.
        max_bytes: most output kept per attempt, both streams together.
        flush_interval_ms: longest time a byte waits in the buffer before it is sent.
    """

    chunk_bytes: int = 16 * 1024
    max_bytes: int = 1024 * 1024
    flush_interval_ms: int = 200


#: Receives one chunk: stream name, text, offset in the stream, whether it marks truncation.
ChunkSink = Callable[[str, str, int, bool], None]


class _Stream:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.oldest: float | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.offset = 0
        self.dropped = 0


class OutputCapture:
    """Turns the bytes of an attempt's streams into chunks for ``sink``; thread-safe.

    Args:
        sink: called with each chunk, in order per stream.
        limits: chunk size, cap and flush interval.
        on_text: also called with each decoded chunk, e.g. to parse a renderer's progress out
            of its output (cgkit's stdout/stderr callbacks).
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        sink: ChunkSink,
        limits: OutputLimits | None = None,
        *,
        on_text: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self.limits = limits or OutputLimits()
        self._on_text = on_text
        self._clock = clock
        self._lock = threading.RLock()
        self._streams = {name: _Stream() for name in STREAMS}
        self._kept = 0
        self._closed = False

    @property
    def kept_bytes(self) -> int:
        """Bytes of output kept so far (both streams)."""
        return self._kept

    @property
    def truncated(self) -> bool:
        """Whether any output was dropped for the cap."""
        return any(stream.dropped for stream in self._streams.values())

    def feed(self, stream: str, data: bytes) -> None:
        """Adds bytes read from ``stream``; full chunks are sent at once."""
        if not data:
            return
        with self._lock:
            state = self._streams[stream]
            room = self.limits.max_bytes - self._kept
            if room <= 0:
                state.dropped += len(data)
                return
            if len(data) > room:
                state.dropped += len(data) - room
                data = data[:room]
            self._kept += len(data)
            if not state.buffer:
                state.oldest = self._clock()
            state.buffer += data
            size = self.limits.chunk_bytes
            while len(state.buffer) >= size:
                self._emit(stream, state, bytes(state.buffer[:size]), final=False)
                del state.buffer[:size]
            if not state.buffer:
                state.oldest = None

    def write(self, stream: str, text: str) -> None:
        """Adds text written by task code and sends it without waiting for the interval."""
        self.feed(stream, text.encode("utf-8"))
        self.flush(stream)

    def flush_due(self) -> None:
        """Sends the buffers whose oldest byte waited for the flush interval."""
        now = self._clock()
        interval = self.limits.flush_interval_ms / 1000
        for name, state in self._streams.items():
            oldest = state.oldest
            if oldest is not None and now - oldest >= interval:
                self.flush(name)

    def flush(self, stream: str | None = None) -> None:
        """Sends what is buffered for ``stream`` (or every stream)."""
        with self._lock:
            for name in STREAMS if stream is None else (stream,):
                state = self._streams[name]
                if state.buffer:
                    self._emit(name, state, bytes(state.buffer), final=False)
                    state.buffer.clear()
                    state.oldest = None

    def close(self) -> None:
        """Sends the rest of every stream and one truncation marker per truncated stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name, state in self._streams.items():
                self._emit(name, state, bytes(state.buffer), final=True)
                state.buffer.clear()
                state.oldest = None
                if state.dropped:
                    marker = (
                        f"\n[joblog: output truncated at {self.limits.max_bytes} bytes per "
                        f"attempt; {state.dropped} bytes of {name} dropped]\n"
                    )
                    self._sink(name, marker, state.offset, True)
                    state.offset += len(marker)

    def _emit(self, name: str, state: _Stream, data: bytes, *, final: bool) -> None:
        text = state.decoder.decode(data, final=final)
        if not text:
            return
        self._sink(name, text, state.offset, False)
        state.offset += len(text)
        if self._on_text is not None:
            self._on_text(name, text)
