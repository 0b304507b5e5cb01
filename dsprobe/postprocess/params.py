"""Checks a postprocess step's params against its function's signature when a Postprocess is built:
names, annotations (``float | list[float]``, ``Literal[...]``, ``Sequence[int]``...) or, without one, the
kind of the default."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Callable, Mapping

import numpy as np


def _type_name(t: Any) -> str:
    """Readable annotation: ``float | list[float] | None``."""
    if t is None or t is type(None):
        return "None"
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None and args:
        return (
            f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
        )
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _fits(value: Any, t: Any) -> bool:
    """Whether a JSON-ish ``value`` fits annotation ``t`` (unknown annotations fit)."""
    if t is Any or t is inspect.Parameter.empty:
        return True
    if t is None or t is type(None):
        return value is None
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if t is bool:
        return isinstance(value, (bool, np.bool_))
    if t is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if t is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        )
    if t is str:
        return isinstance(value, str)
    seq = origin if origin is not None else t
    if seq in (list, tuple, collections.abc.Sequence, typing.Sequence):
        if isinstance(value, str) or not isinstance(value, (list, tuple, np.ndarray)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if seq in (dict, collections.abc.Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, t) if isinstance(t, type) else True


def _fits_default(value: Any, default: Any) -> bool:
    """Without an annotation: a value fits when it is of the default's kind (numbers for numbers,
    lists of numbers allowed where a number is the default: per-class values)."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, (bool, np.bool_))
    if isinstance(default, (int, float)):
        num = (int, float, np.number)
        return (isinstance(value, num) and not isinstance(value, bool)) or (
            isinstance(value, (list, tuple))
            and all(isinstance(v, num) and not isinstance(v, bool) for v in value)
        )
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


_HINTS: dict[Callable, dict[str, Any]] = {}


def _type_hints(fn: Callable) -> dict[str, Any]:
    """Resolved annotations of ``fn`` (cached; {} when they cannot be resolved: user code)."""
    if fn not in _HINTS:
        try:
            _HINTS[fn] = typing.get_type_hints(fn)
        except Exception:
            _HINTS[fn] = {}
    return _HINTS[fn]


def check_params(where: str, params: Mapping[str, Any], fn: Callable) -> None:
    """Unknown params, params whose type doesn't fit the function's annotation (or, without one, its
    default) and missing required params raise ValueError naming ``where`` (the step), the param and
    what was expected. The first two parameters of ``fn`` (layers or detections, context) are not params."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    hints = _type_hints(fn)
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    kw = {
        n: p
        for n, p in list(sig.parameters.items())[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    for name, value in params.items():
        if name not in kw:
            if accepts_kwargs:
                continue
            raise ValueError(f"{where}: unknown param {name!r}; expected one of {sorted(kw)}")
        default = kw[name].default
        if name in hints:
            ok = _fits(value, hints[name])
            expected = _type_name(hints[name])
        else:
            ok = _fits_default(value, default)
            expected = f"a {type(default).__name__}"
        if not ok:
            raise ValueError(
                f"{where}: param {name!r} = {value!r} ({type(value).__name__}) does not fit; "
                f"expected {expected} (default {default!r})"
            )
    missing = [n for n, p in kw.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ValueError(f"{where}: missing required param(s) {', '.join(map(repr, missing))}")
