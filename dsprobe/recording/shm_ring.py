"""The shared-memory ring between a Recorder and its writer process (``writer="process"``).

One producer side (the caller's ``record()``, any thread, under one lock) copies each frame's
arrays once into a message of the ring and publishes it; the consumer (the writer process) builds
the FrameRecord from **views** of the ring, and a message's bytes are given back (the shared free
index advances) once nothing in the writer refers to them any more: the views die when their block
is written or the frame is dropped. No numpy array is pickled: what travels besides the bytes is a
small tuple (the record's fields, each array as offset, shape and dtype) pickled into the message.
A probe can copy a frame's data straight into the message being built
(:meth:`Producer.frame_memory`): those arrays are not copied again.

Memory: an anonymous ``memfd`` (Linux) handed to the child as a file descriptor, so there is no
name in ``/dev/shm`` to leak, whatever kills whom; elsewhere a file in ``/dev/shm`` (or the temp
folder) unlinked at once. The caller maps it populated (every page allocated when the Recorder
starts: no copy into the ring pays for a page fault).

Layout: :data:`CTL_BYTES` of control words (uint64: the producer's write index, the consumer's
free index, frames sent, frames taken, the consumer's "sleeping" flag), then the data area.
Indexes are virtual byte positions that only grow (position in the area = index modulo its size).
A message, at a multiple of :data:`ALIGN`: a header (its length, kind, the skeleton's length), the
arrays (each at a multiple of :data:`ALIGN`), the pickled skeleton; one that does not fit before
the area's end is put at its start, a WRAP header marking the skipped tail.

Memory order: the producer publishes the write index after the bytes, the consumer the free index
after its last read; each side puts :func:`fence` in between (lock operations: a release followed
by an acquire orders what comes before against what comes after on x86 and on ARMv8, where
Jetsons run)."""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import pickle
import struct
import tempfile
import threading
import weakref
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord

#: alignment (bytes) of messages and of the arrays inside them
ALIGN = 64
#: bytes of control words before the data area
CTL_BYTES = 4096
#: control words (uint64 indexes into the control area)
WRITE, FREE, SENT, TAKEN, SLEEPING = range(5)
#: message header: length (bytes, a multiple of ALIGN, header included), kind, where the skeleton
#: starts and its length (bytes)
HEAD = struct.Struct("<QIII")
FRAME, WRAP = 1, 2
#: skeleton kinds: the fields as tuples (FrameRecord / ObjectRecord / ImageRecord exactly), or any
#: object pickled with its arrays placed in the ring
FIELDS, PICKLED = 0, 1
#: array payloads: placed in the ring (offset, shape, dtype), or the value as it was
PLACED, VALUE = 0, 1
#: arrays smaller than this (bytes) are copied in holding the GIL (a memoryview copy: less
#: overhead), bigger ones by numpy, which lets other threads run while it copies
SMALL_COPY = 64 << 10
#: room kept after arrays allocated in a message for what follows them (skeleton, other arrays)
ALLOC_SLACK = 64 << 10
#: dtype kinds placed in the ring (anything else, object arrays included, is pickled)
PLACEABLE = frozenset("biufc")

_FENCE = threading.Lock()


def fence() -> None:
    """A release followed by an acquire (two lock operations): memory accesses before it are
    visible to the other process before those after it."""
    _FENCE.acquire()
    _FENCE.release()
    _FENCE.acquire()
    _FENCE.release()


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def make_memory(nbytes: int) -> int:
    """A file descriptor of ``nbytes`` of shared memory with no name left behind."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("dsprobe-ring", getattr(os, "MFD_CLOEXEC", 1))
    else:  # pragma: no cover - not Linux
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, name = tempfile.mkstemp(prefix="dsprobe-ring-", dir=folder)
        os.unlink(name)
    try:
        os.ftruncate(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Ring:
    """The ring's memory, mapped from ``fd`` (``nbytes`` in all, control area included)."""

    def __init__(self, fd: int, nbytes: int, populate: bool = False) -> None:
        # populate (the caller's side): every page allocated and mapped now, so no copy into the
        # ring ever pays for a page fault (a probe's first pass through a fresh ring doubled its
        # time: ~3,700 faults per batch of 15 MB)
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        self.map = mmap.mmap(fd, nbytes, flags=flags)
        whole = memoryview(self.map)
        #: the control words (an aligned 8-byte item store is one store: atomic)
        self.ctl = whole[:CTL_BYTES].cast("Q")
        #: the data area as bytes (small copies, headers) and as an array (big copies: numpy
        #: releases the GIL while it copies)
        self.buf = whole[CTL_BYTES:]
        self.data = np.frombuffer(self.map, np.uint8, nbytes - CTL_BYTES, CTL_BYTES)
        self.size = nbytes - CTL_BYTES
        whole.release()

    def word(self, k: int) -> int:
        return self.ctl[k]

    def close(self) -> None:
        """Unmap (now, or when the last view of it dies: arrays the caller still holds)."""
        self.ctl.release()
        self.buf.release()
        del self.data
        try:
            self.map.close()
        except BufferError:  # views still exported; the mapping goes with the last of them
            pass


# ---------------------------------------------------------------------- the producer
class Encoder:
    """Turns a FrameRecord into a skeleton (small tuples) and a list of arrays to place."""

    def __init__(self, message: OpenMessage | None = None) -> None:
        self.arrays: list[tuple[int, np.ndarray]] = []  # (offset in the message, array to copy)
        #: arrays already in the message (the probe copied into them): id -> (array, offset)
        self.inplace = message.arrays if message is not None else {}
        self.used_inplace = False
        #: bytes of the message used so far (the header first, then what was allocated in it)
        self.end = self.first = message.end if message is not None else HEAD.size

    def place(self, value: Any) -> tuple:
        got = self.inplace.get(id(value))
        if got is not None and got[0] is value:  # already there: nothing to copy
            self.used_inplace = True
            return (PLACED, got[1], value.shape, value.dtype.str)
        if (
            type(value) is np.ndarray
            and value.dtype.kind in PLACEABLE
            and value.dtype.names is None
        ):
            at = aligned(self.end)
            self.arrays.append((at, value))
            self.end = at + value.nbytes
            return (PLACED, at, value.shape, value.dtype.str)
        return (VALUE, value)

    def layers(self, layers: dict) -> Any:
        if type(layers) is not dict:
            raise TypeError("not a dict")
        return [(k, self.place(v)) for k, v in layers.items()]

    def image(self, image: Any) -> Any:
        if image is None:
            return None
        if type(image) is not ImageRecord or len(image.__dict__) != 3:  # data, rect, encoding
            raise TypeError("not an ImageRecord")
        return (self.place(image.data), image.rect, image.encoding)

    def obj(self, o: Any) -> list:
        d = o.__dict__
        if type(o) is not ObjectRecord or len(d) != len(OBJECT_FIELDS):
            raise TypeError("not an ObjectRecord")
        v = [d[k] for k in OBJECT_FIELDS]  # by name: an attribute deleted and set again moves
        v[J_LAYERS] = self.layers(v[J_LAYERS])  # in __dict__
        if v[J_IMAGE] is not None:
            v[J_IMAGE] = self.image(v[J_IMAGE])
        return v

    def frame(self, f: FrameRecord, recv_ns: int) -> bytes:
        """The pickled skeleton of ``f``; its arrays wait in :attr:`arrays`."""
        try:
            d = f.__dict__
            if type(f) is not FrameRecord or len(d) != len(FRAME_FIELDS):
                raise TypeError("not a FrameRecord")
            v = [d[k] for k in FRAME_FIELDS]
            v[I_LAYERS] = self.layers(v[I_LAYERS])
            if v[I_OBJECTS]:
                v[I_OBJECTS] = [self.obj(o) for o in v[I_OBJECTS]]
            if v[I_DETECTIONS]:
                v[I_DETECTIONS] = [self.obj(o) for o in v[I_DETECTIONS]]
            if v[I_IMAGE] is not None:
                v[I_IMAGE] = self.image(v[I_IMAGE])
            return pickle.dumps((FIELDS, v, recv_ns), protocol=5)
        except (TypeError, KeyError, AttributeError):  # an odd record (a subclass, fields of
            # other types, a field deleted): pickled whole
            self.arrays, self.end, self.used_inplace = [], self.first, False
        return pickle.dumps((PICKLED, self._pickled(f), recv_ns), protocol=5)

    def _pickled(self, f: Any) -> bytes:
        import io

        buf = io.BytesIO()
        enc = self

        class Placing(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if type(obj) is np.ndarray and obj.dtype.kind in PLACEABLE:
                    return enc.place(obj)
                return None

        Placing(buf, protocol=5).dump(f)
        return buf.getvalue()


#: the records' fields, in the order their skeletons list them
FRAME_FIELDS = tuple(f.name for f in dataclasses.fields(FrameRecord))
OBJECT_FIELDS = tuple(f.name for f in dataclasses.fields(ObjectRecord))
I_LAYERS, I_OBJECTS, I_DETECTIONS, I_IMAGE = (
    FRAME_FIELDS.index(k) for k in ("layers", "objects", "detections", "image")
)
J_LAYERS, J_IMAGE = OBJECT_FIELDS.index("layers"), OBJECT_FIELDS.index("image")


class TooBig(ValueError):
    """A frame bigger than the whole ring: no wait makes room for it."""


class OpenMessage:
    """A message being filled by the caller (:meth:`Producer.frame_memory`): arrays allocated in it
    from ``start`` (a virtual index), ``end`` bytes used so far."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.end = HEAD.size
        self.arrays: dict[int, tuple[np.ndarray, int]] = {}


class Producer:
    """The caller's side of the ring: :meth:`put` copies a frame in, never waits for the writer;
    :meth:`frame_memory` lets a probe copy a frame's arrays straight into the ring."""

    def __init__(self, ring: Ring, max_frames: int, wake: Callable[[], None]) -> None:
        self.ring = ring
        self.max_frames = max_frames
        self.wake = wake
        self.wake_at = 1
        self.lock = threading.RLock()
        self.message: OpenMessage | None = None  # being filled (by the thread holding the lock)
        self.last_length = 0  # bytes of the last message (where the next one should fit)
        self.write = 0  # virtual write index (published in ctl[WRITE])
        self.sent = 0
        self.in_place = 0  # frames sent with arrays a probe had copied into the ring
        self.closed = False  # no more frames
        self.ring_open = True

    def put(self, frame: FrameRecord, recv_ns: int) -> bool | None:
        """Copy ``frame`` into the ring and publish it; False when there is no room (frames or
        bytes), None once :meth:`stop` was called. Raises :class:`TooBig` for a frame bigger
        than the ring, and what pickling the skeleton raises (the frame is then not sent)."""
        ring = self.ring
        size = ring.size
        with self.lock:
            if self.closed:
                return None
            if self.sent - ring.word(TAKEN) >= self.max_frames:
                return False
            message = self.message
            enc = Encoder(message)
            skeleton = enc.frame(frame, recv_ns)
            skel_at = aligned(enc.end)
            length = aligned(skel_at + len(skeleton))
            start = self.write
            pos = start % size
            tail = size - pos
            skip = tail if length > tail else 0
            if enc.used_inplace and (skip or start + length - ring.word(FREE) > size):
                if not skip:  # no room now
                    return False
                # the arrays the probe copied in sit at the end, where the message does not fit:
                # copied into one at the ring's start (never over them: the tail is skipped)
                enc = Encoder()
                skeleton = enc.frame(frame, recv_ns)
                skel_at = aligned(enc.end)
                length = aligned(skel_at + len(skeleton))
            if length > size:
                raise TooBig(
                    f"a frame of {length / 2**20:.1f} MiB does not fit the writer process's "
                    f"shared memory ({size / 2**20:.0f} MiB): raise ring_mib"
                )
            if start + skip + length - ring.word(FREE) > size:
                return False
            fence()  # the consumer's reads of the bytes it freed come before our writes
            buf = ring.buf
            if skip:
                HEAD.pack_into(buf, pos, skip, WRAP, 0, 0)
                pos = 0
            for at, a in enc.arrays:
                n = a.nbytes
                if n < SMALL_COPY and a.flags.c_contiguous:
                    buf[pos + at : pos + at + n] = a.data.cast("B")
                elif n:
                    dst = ring.data[pos + at : pos + at + n].view(a.dtype).reshape(a.shape)
                    np.copyto(dst, a, casting="no")
            buf[pos + skel_at : pos + skel_at + len(skeleton)] = skeleton
            HEAD.pack_into(buf, pos, length, FRAME, skel_at, len(skeleton))
            # from here to the published index only C calls (no Python function, no loop), so a
            # signal handler (Ctrl-C) cannot stop it half-way: a frame counted in ``sent`` is
            # published, and one that is not was never sent
            self.write = start + skip + length
            _FENCE.acquire()  # the bytes before the index (fence(), inlined)
            _FENCE.release()
            _FENCE.acquire()
            _FENCE.release()
            ring.ctl[WRITE] = self.write
            self.sent += 1
            ring.ctl[SENT] = self.sent
            self.in_place += enc.used_inplace
            self.last_length = length
            if message is not None:  # the next frame of the probe starts a message of its own
                self.message = self._next_message()
            fence()  # the index before the look at the consumer's flag (it: the reverse)
            waiting = self.sent - ring.word(TAKEN)
            if ring.word(SLEEPING) and (
                waiting >= self.wake_at or self.write - ring.word(FREE) > size // 2
            ):
                self.wake()
        return True

    def in_flight(self) -> int:
        """Frames published and not yet taken by the writer."""
        with self.lock:
            return self.sent - self.ring.word(TAKEN) if self.ring_open else 0

    @contextmanager
    def frame_memory(self) -> Iterator[Callable[[tuple, Any], np.ndarray | None]]:
        """For a probe: ``alloc(shape, dtype)`` gives an array in the ring (None when there is
        no room: the caller makes its own) to copy a frame's data into; a frame recorded (``put``)
        in the block with such arrays is published without copying them again. Holds the
        producer's lock for the block: another thread's ``put`` waits for it."""
        with self.lock:
            outer = self.message
            self.message = self._next_message()
            try:
                yield self.alloc
            finally:
                self.message = outer

    def _next_message(self) -> OpenMessage:
        """Where the next message starts: at the write index, or at the ring's start when the
        last message's size no longer fits before the end (a WRAP marks the skipped tail)."""
        ring, start = self.ring, self.write
        pos = start % ring.size
        tail = ring.size - pos
        if (
            self.ring_open
            and not self.closed
            and tail < self.last_length
            and start + tail - ring.word(FREE) <= ring.size
        ):
            fence()
            HEAD.pack_into(ring.buf, pos, tail, WRAP, 0, 0)  # published with the next message
            self.write = start = start + tail
        return OpenMessage(start)

    def alloc(self, shape: tuple, dtype: Any) -> np.ndarray | None:
        """An array of ``shape`` and ``dtype`` in the open message, None when it does not fit
        (or there is no open message)."""
        m, ring = self.message, self.ring
        if m is None or self.closed or not self.ring_open:
            return None
        dt = np.dtype(dtype)
        at = aligned(m.end)
        end = at + dt.itemsize * math.prod(shape)
        pos = m.start % ring.size
        room = end + ALLOC_SLACK  # the skeleton and the header follow
        if pos + room > ring.size or m.start + room - ring.word(FREE) > ring.size:
            return None
        fence()  # the consumer's reads of the bytes it freed come before our writes
        arr = np.ndarray(shape, dt, buffer=ring.data, offset=pos + at)
        m.arrays[id(arr)] = (arr, at)
        m.end = end
        return arr

    def stop(self) -> int:
        """No more frames (``put`` returns None from now on); returns the frames sent."""
        with self.lock:
            self.closed = True
            return self.sent

    def close(self) -> None:
        """Stop, and unmap the ring (the consumer is gone)."""
        with self.lock:
            if self.ring_open:
                self.closed, self.ring_open = True, False
                self.ring.close()


# ---------------------------------------------------------------------- the consumer
class Consumer:
    """The writer process's side: :meth:`take` builds the next FrameRecord from views of the ring;
    a message's bytes are freed once the views of it (and of every message before) are gone."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.read = 0  # virtual index of the next message
        self.taken = 0
        self.held: deque = deque()  # [end index, still referenced] per message, oldest first
        self.refs: dict[int, list] = {}  # id(weakref) -> its entry in held

    def available(self) -> bool:
        return self.read < self.ring.word(WRITE)

    def take(self) -> tuple[Any, int] | None:
        """(FrameRecord, recv_ns) of the next message (the exception instead of the record when it
        cannot be loaded here), None when none is published."""
        ring = self.ring
        size = ring.size
        while True:
            if self.read >= ring.word(WRITE):
                return None
            fence()  # the index before the bytes
            pos = self.read % size
            length, kind, skel_at, n_skel = HEAD.unpack_from(ring.buf, pos)
            if kind == WRAP:
                self.read += length
                self._hold(self.read, None)
                continue
            break
        start, self.read = self.read, self.read + length
        # an array of its own over the mapping (not a slice of ring.data): the views made of it
        # keep it alive, and it tells (a weak reference) when the last of them is gone
        base = np.frombuffer(ring.map, np.uint8, length, CTL_BYTES + pos)
        self.taken += 1
        ring.ctl[TAKEN] = self.taken
        try:
            at = pos + skel_at
            kind, body, recv_ns = pickle.loads(ring.buf[at : at + n_skel])
            item: Any = (decode(kind, body, base), recv_ns)
        except Exception as exc:  # a class only the caller knows, a garbled skeleton
            item = (exc.with_traceback(None), 0)  # its traceback would hold the message's bytes
        self._hold(start + length, base)
        return item

    def _hold(self, end: int, base: np.ndarray | None) -> None:
        entry = [end, base is not None]
        self.held.append(entry)
        if base is not None:
            ref = weakref.ref(base, self._gone)
            self.refs[id(ref)] = entry
            entry.append(ref)
        self._advance()

    def _gone(self, ref: weakref.ref) -> None:
        entry = self.refs.pop(id(ref), None)
        if entry is not None:
            entry[1] = False
            self._advance()

    def _advance(self) -> None:
        held, free = self.held, None
        while held and not held[0][1]:
            free = held.popleft()[0]
        if free is not None:
            fence()  # our reads of those bytes before the producer may overwrite them
            self.ring.ctl[FREE] = free

    def in_flight(self) -> int:
        return self.ring.word(SENT) - self.taken

    def held_bytes(self) -> int:
        """Bytes of the messages taken and not yet given back."""
        return self.read - self.ring.word(FREE)

    def sleeping(self, flag: bool) -> None:
        self.ring.ctl[SLEEPING] = int(flag)


def decode(kind: int, body: Any, base: np.ndarray) -> Any:
    """The FrameRecord (or whatever was pickled) of a skeleton, its arrays views of ``base``."""
    if kind == PICKLED:
        return Placed(io_bytes(body), base).load()
    d = list(body)
    d[I_LAYERS] = layers_of(d[I_LAYERS], base)
    d[I_OBJECTS] = [object_of(o, base) for o in d[I_OBJECTS]]
    d[I_DETECTIONS] = [object_of(o, base) for o in d[I_DETECTIONS]]
    d[I_IMAGE] = image_of(d[I_IMAGE], base)
    return FrameRecord(*d)


def value_of(payload: tuple, base: np.ndarray) -> Any:
    if payload[0] == VALUE:
        return payload[1]
    _, at, shape, dtype = payload
    dt = np.dtype(dtype)
    n = dt.itemsize * math.prod(shape)
    # a view of ``base`` (its .base: ``base``, which numpy does not look past: base's own base is
    # the mapping); slicing, not np.ndarray(buffer=base), which formats a buffer description for
    # every new base (~9 us)
    return base[at : at + n].view(dt).reshape(shape)


def layers_of(items: list, base: np.ndarray) -> dict:
    return {k: value_of(v, base) for k, v in items}


def image_of(t: tuple | None, base: np.ndarray) -> ImageRecord | None:
    if t is None:
        return None
    return ImageRecord(value_of(t[0], base), t[1], t[2])


def object_of(t: tuple, base: np.ndarray) -> ObjectRecord:
    d = list(t)
    d[J_LAYERS] = layers_of(d[J_LAYERS], base)
    d[J_IMAGE] = image_of(d[J_IMAGE], base)
    return ObjectRecord(*d)


def io_bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


class Placed(pickle.Unpickler):
    """Loads a record pickled whole, its placed arrays views of ``base``."""

    def __init__(self, f: Any, base: np.ndarray) -> None:
        super().__init__(f)
        self.base = base

    def persistent_load(self, pid: Any) -> Any:
        return value_of(pid, self.base)
