"""A TEST DOUBLE of the bits of GStreamer (PyGObject ``Gst``) that dsprobe's probes touch.

Used only by dsprobe's tests (no machine here has DeepStream or its GStreamer plugins). Behaviour
that matters, as PyGObject gives it:

* ``Pad.add_probe(mask, callback, user_data)`` / ``remove_probe(id)``; ``pad.get_parent_element()``,
  ``pad.get_peer()``;
* ``Element.get_property(name)`` raises TypeError for a property the element does not have (the new
  nvstreammux has no ``width`` / ``height``), as PyGObject does;
* ``element.get_parent()`` is the containing Bin (None at the top); ``Bin.iterate_recurse()`` gives
  an iterator whose ``next()`` returns ``(Gst.IteratorResult, element)`` with ``OK == 1`` and
  ``DONE == 0``;
* ``element.get_factory().get_name()`` is the factory name (``nvstreammux``, ``nvvideoconvert``...);
* ``Element.link(other)`` connects ``src`` to ``other``'s ``sink`` pad (peers both ways).
"""

from __future__ import annotations

import enum
import itertools
from typing import Any

_ids = itertools.count(1)


class Gst:
    class PadProbeReturn(enum.IntEnum):
        OK = 1
        DROP = 0

    class PadProbeType(enum.IntFlag):
        BUFFER = 16

    class IteratorResult(enum.IntEnum):
        DONE = 0
        OK = 1
        RESYNC = 2
        ERROR = 3


class Buffer:
    """A GstBuffer stand-in: ``hash(buffer)`` is its 'address'."""

    def __init__(self) -> None:
        self.address = next(_ids) * 4096

    def __hash__(self) -> int:
        return self.address


class ProbeInfo:
    def __init__(self, buf: Buffer) -> None:
        self._buf = buf

    def get_buffer(self) -> Buffer:
        return self._buf


class Pad:
    def __init__(self, name: str = "src", parent: "Element | None" = None) -> None:
        self.name = name
        self.parent = parent
        self.peer: Pad | None = None
        self.probes: dict[int, Any] = {}
        self._n = itertools.count(1)

    def add_probe(self, kind: Any, callback: Any, user_data: Any) -> int:
        pid = next(self._n)
        self.probes[pid] = (callback, user_data)
        return pid

    def remove_probe(self, pid: int) -> None:
        self.probes.pop(pid)

    def get_parent_element(self) -> "Element | None":
        return self.parent

    def get_direction(self) -> int:
        return 2 if self.name.startswith("sink") else 1  # GST_PAD_SINK / GST_PAD_SRC

    def get_peer(self) -> "Pad | None":
        return self.peer

    def push(self, buf: Buffer) -> list:
        return [cb(self, ProbeInfo(buf), ud) for cb, ud in list(self.probes.values())]


class _Factory:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name


class Element:
    """A Gst.Element stand-in: a static ``src`` and ``sink`` pad, GObject properties, a parent Bin."""

    def __init__(
        self,
        name: str,
        pad: Pad | None = None,
        factory: str = "identity",
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.src = pad if pad is not None else Pad("src")
        self.src.parent = self
        self.sink = Pad("sink", self)
        self.factory = _Factory(factory)
        self.properties = dict(properties or {})
        self.parent: Bin | None = None

    def get_name(self) -> str:
        return self.name

    def get_static_pad(self, name: str) -> Pad | None:
        return {"src": self.src, "sink": self.sink}.get(name)

    def get_factory(self) -> _Factory:
        return self.factory

    def get_parent(self) -> "Bin | None":
        return self.parent

    def get_property(self, name: str) -> Any:
        if name not in self.properties:  # PyGObject: TypeError for an unknown property
            raise TypeError(f"object of type `{self.factory.name}' does not have property `{name}'")
        return self.properties[name]

    def set_property(self, name: str, value: Any) -> None:
        self.properties[name] = value

    def link(self, other: "Element") -> bool:
        self.src.peer, other.sink.peer = other.sink, self.src
        return True


class _Iterator:
    def __init__(self, items: list) -> None:
        self._items = list(items)

    def next(self) -> tuple[int, Any]:
        if not self._items:
            return Gst.IteratorResult.DONE, None
        return Gst.IteratorResult.OK, self._items.pop(0)


class Bin(Element):
    """A Gst.Bin / Gst.Pipeline stand-in holding elements (``add`` sets their parent)."""

    def __init__(self, name: str = "pipeline") -> None:
        super().__init__(name, factory="pipeline")
        self.children: list[Element] = []

    def add(self, *elements: Element) -> None:
        for el in elements:
            el.parent = self
            self.children.append(el)

    def iterate_recurse(self) -> _Iterator:
        out: list[Element] = []
        for el in self.children:
            out.append(el)
            if isinstance(el, Bin):
                out += el.iterate_recurse()._items
        return _Iterator(out)


def chain(bin_: Bin, *elements: Element) -> list[Element]:
    """Add ``elements`` to ``bin_`` and link them in order."""
    bin_.add(*elements)
    for a, b in zip(elements, elements[1:]):
        a.link(b)
    return list(elements)
