"""The bounded hand-over between ``Recorder.record()`` (any thread) and the writer (:class:`FrameQueue`).

``queue.Queue`` takes a lock and signals a condition on every put and get, and wakes the writer for
every frame: with small frames the hand-over cost as much as writing them (issue 20). Here a put is a
``deque.append`` (atomic in CPython) and the writer is woken only once ``wake_at`` frames wait (or by
:meth:`FrameQueue.put`, which close() uses for its stop marker); otherwise it sleeps until its own
timeout (the next flush), when it takes everything queued. Frames are committed at flushes anyway,
so batching the wake-ups delays nothing a reader can see."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any, Protocol


class FrameSource(Protocol):
    """What the writer loop takes frames from: a :class:`FrameQueue` (the writer thread), or the
    writer process's ring (``writer_process.RingFrames``)."""

    def get(self, timeout: float) -> Any: ...

    def pop(self) -> Any: ...

    def qsize(self) -> int: ...

    def pressed(self) -> bool:
        """True when the frames taken should be written now (their memory is wanted back)."""
        ...


class FrameQueue:
    """A FIFO of at most ``maxsize`` items for many producers and one consumer.

    Producers that wait for room (:meth:`put`) are woken once the queue has drained to
    ``maxsize // 2`` (or when the consumer goes to sleep), not at every item taken: a producer faster
    than the consumer then refills half the queue at once instead of trading the GIL with the
    consumer item by item."""

    def __init__(self, maxsize: int, wake_at: int = 1) -> None:
        self.items: deque = deque()
        self.maxsize = maxsize
        self.wake_at = max(1, min(wake_at, maxsize))
        self.resume_at = maxsize // 2  # producers waiting for room are woken at this depth
        self.cond = threading.Condition(threading.Lock())
        self.sleeping = False  # the consumer waits in get()
        self.room_wanted = False  # a producer may wait in put() (cleared when they are woken)

    def qsize(self) -> int:
        return len(self.items)

    def pressed(self) -> bool:
        """Never: the frames' memory is the caller's own."""
        return False

    def put_nowait(self, item: Any) -> None:
        """Append ``item``; ``queue.Full`` when ``maxsize`` items wait (concurrent producers may
        pass the bound by one each). Wakes the consumer once ``wake_at`` items wait."""
        if len(self.items) >= self.maxsize:
            raise queue.Full
        self.items.append(item)
        if self.sleeping and len(self.items) >= self.wake_at:
            with self.cond:
                self.cond.notify_all()

    def put(self, item: Any, timeout: float) -> None:
        """Append ``item``, waiting up to ``timeout`` seconds for room (``queue.Full`` after);
        always wakes the consumer."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) >= self.maxsize:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise queue.Full
                self.room_wanted = True
                self.cond.wait(left)
            self.items.append(item)
            self.cond.notify_all()

    def get(self, timeout: float) -> Any:
        """The oldest item, waiting up to ``timeout`` seconds for one; None when there is none."""
        try:
            item = self.items.popleft()
        except IndexError:
            with self.cond:
                self.sleeping = True
                try:
                    if not self.items:
                        if self.room_wanted:  # (a producer that found the queue full just now)
                            self.room_wanted = False
                            self.cond.notify_all()
                        self.cond.wait(timeout)
                finally:
                    self.sleeping = False
            return self.pop()
        if self.room_wanted and len(self.items) <= self.resume_at:
            self._wake_producers()
        return item

    def pop(self) -> Any:
        """The oldest item, or None when the queue is empty (never waits)."""
        try:
            item = self.items.popleft()
        except IndexError:
            return None
        if self.room_wanted and len(self.items) <= self.resume_at:
            self._wake_producers()
        return item

    def _wake_producers(self) -> None:
        with self.cond:
            self.room_wanted = False
            self.cond.notify_all()
