"""Lazy access to pyds and GStreamer (Gst). Nothing in dsprobe imports them at module import time."""

from __future__ import annotations

from typing import Any

_override: tuple[Any, Any] | None = None


def use_bindings(pyds: Any, gst: Any) -> None:
    """Replace the real bindings (a test double in tests/ uses this); ``None, None`` restores them."""
    global _override
    _override = None if pyds is None else (pyds, gst)


def pyds() -> Any:
    if _override is not None:
        return _override[0]
    try:
        import pyds as mod
    except ImportError as exc:
        raise ImportError(
            "dsprobe.deepstream needs DeepStream's Python bindings (pyds): install the pyds wheel "
            "for your DeepStream version on the device; see docs/jetson.md"
        ) from exc
    return mod


def gst() -> Any:
    if _override is not None:
        return _override[1]
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        raise ImportError(
            "dsprobe.deepstream needs GStreamer's Python bindings (python3-gi, gir1.2-gst-1.0)"
        ) from exc
    return Gst
