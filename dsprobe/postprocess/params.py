"""A postprocess step's params from its function's signature: checked when a Postprocess is built
(names, annotations such as ``float | list[float]``, ``Literal[...]``, ``Sequence[int]`` or, without one,
the kind of the default), and described for tuning (:class:`ParamSpec`: type, per-class, range from
``typing.Annotated[float, Range(0, 1)]``, choices, doc)."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dsprobe.postprocess.nvinfer_params import row_for_param


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
    if origin is typing.Literal:  # same value and type: 5.0 is not Literal[5], True is not 1
        v = value.item() if isinstance(value, np.generic) else value
        return any(v == a and type(v) is type(a) for a in args)
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


# ---------------------------------------------------------------------------------------- params by name
@dataclass(frozen=True)
class Range:
    """Bounds of a numeric step param, given in its annotation:
    ``score_threshold: Annotated[float, Range(0, 1)] = 0.3`` (None = open; ``step`` = slider step)."""

    low: float | None = None
    high: float | None = None
    step: float | None = None


#: ParamSpec.type values
PARAM_TYPES = ("bool", "int", "float", "choice", "str", "list", "any")


@dataclass(frozen=True)
class ParamSpec:
    """One tunable param of a Postprocess, derived from its step function's signature.

    * ``name``: the function's keyword; ``step_kind`` / ``step_name``: the step that owns it;
      ``step_index``: its position in ``pp.steps`` (None: nvinfer's ``filter:objects`` step, which
      setting the param adds after the scale step).
    * ``default``: the function's default. ``type``: one of :data:`PARAM_TYPES`;
      ``per_class``: the value may also be one value per class id (a list, as nvinfer's
      ``[class-attrs-N]``); ``optional``: None is allowed.
    * ``range``: :class:`Range` from the annotation or from nvinfer's key table, else None;
      ``choices``: the ``Literal[...]`` values; ``doc``: the docstring line naming the param;
      ``nvinfer_key``: the nvinfer config key that sets it, if any.
    """

    name: str
    step_kind: str
    step_name: str
    step_index: int | None
    default: Any
    type: str
    per_class: bool = False
    optional: bool = False
    range: Range | None = None
    choices: tuple = ()
    doc: str = ""
    nvinfer_key: str | None = None


def plain(value: Any) -> Any:
    """JSON-friendly python value (numpy scalars and arrays to python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value


_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def _is_seq(t: Any) -> bool:
    origin = typing.get_origin(t)
    return (origin if origin is not None else t) in (
        list,
        tuple,
        collections.abc.Sequence,
        typing.Sequence,
    )


def _is_map(t: Any) -> bool:
    origin = typing.get_origin(t)
    return (origin if origin is not None else t) in (dict, collections.abc.Mapping, typing.Mapping)


def _of_default(default: Any) -> tuple[str, bool]:
    """(type, per_class) from a default alone."""
    if isinstance(default, bool):
        return "bool", False
    for t in (int, float, str):
        if isinstance(default, t):
            return _SCALARS[t], False
    if (
        isinstance(default, (list, tuple))
        and default
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default)
    ):
        return ("float" if any(isinstance(v, float) for v in default) else "int"), True
    return "any", False


def describe_annotation(t: Any, default: Any) -> dict[str, Any]:
    """type / per_class / optional / range / choices of a param annotated ``t`` with ``default``:
    ``Annotated[T, Range(..)]`` gives the range; ``T | None`` optional; ``Literal[...]`` a choice;
    a scalar together with a sequence (or mapping) of scalars (``float | list[float]``) per class."""
    out: dict[str, Any] = {"per_class": False, "optional": False, "range": None, "choices": ()}
    if typing.get_origin(t) is typing.Annotated:
        base, *extras = typing.get_args(t)
        out["range"] = next((e for e in extras if isinstance(e, Range)), None)
        t = base
    if t is inspect.Parameter.empty or t is Any:
        out["type"], out["per_class"] = _of_default(default)
        return out
    args = (
        list(typing.get_args(t)) if typing.get_origin(t) in (typing.Union, types.UnionType) else [t]
    )
    if type(None) in args:
        out["optional"] = True
        args = [a for a in args if a is not type(None)]
    literals = [a for a in args if typing.get_origin(a) is typing.Literal]
    scalars = [a for a in args if a in _SCALARS]
    if literals and len(literals) == len(args):
        out["type"] = "choice"
        out["choices"] = tuple(v for lit in literals for v in typing.get_args(lit))
        return out
    if scalars:
        if len(scalars) > 1:  # float | int: the default says which
            kind, _ = _of_default(default)
            out["type"] = kind if kind in ("int", "float") else _SCALARS[scalars[0]]
        else:
            out["type"] = _SCALARS[scalars[0]]
        out["per_class"] = any(_is_seq(a) or _is_map(a) for a in args)
        return out
    if args and all(_is_seq(a) for a in args):
        out["type"] = "list"
        return out
    out["type"] = "any"
    return out


def _doc_line(fn: Callable, name: str) -> str:
    for line in (inspect.getdoc(fn) or "").splitlines():
        if f"``{name}``" in line:
            return line.strip().lstrip("*- ").strip()
    return ""


_SPECS: dict[Callable, tuple[tuple[str, Any, dict[str, Any], str], ...]] = {}


def function_params(fn: Callable) -> tuple[tuple[str, Any, dict[str, Any], str], ...]:
    """``(name, default, describe_annotation(..), doc)`` of each keyword param of a step function
    (its first two parameters, layers/detections and context, are not params). Cached per function."""
    if fn in _SPECS:
        return _SPECS[fn]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        _SPECS[fn] = ()
        return ()
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable annotations (user code): fall back to the defaults
        hints = {}
    out = []
    for p in list(sig.parameters.values())[2:]:
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        default = None if p.default is p.empty else p.default
        out.append(
            (
                p.name,
                default,
                describe_annotation(hints.get(p.name, p.empty), default),
                _doc_line(fn, p.name),
            )
        )
    _SPECS[fn] = tuple(out)
    return _SPECS[fn]


def param_specs(
    steps: Sequence[Any], fns: Sequence[Callable], object_filter: Callable
) -> dict[str, ParamSpec]:
    """:meth:`Postprocess.param_specs <dsprobe.postprocess.pipeline.Postprocess.param_specs>` of
    ``steps`` (objects with ``kind`` / ``name``) run by ``fns``; ``object_filter`` is nvinfer's
    ``filter:objects`` function, listed with ``step_index`` None when no step runs it."""
    entries: list[tuple[int | None, str, str, Callable]] = [
        (i, s.kind, s.name, fn) for i, (s, fn) in enumerate(zip(steps, fns))
    ]
    if not any(fn is object_filter for fn in fns):
        entries.append((None, "filter", "objects", object_filter))
    claims = []
    for order, (index, kind, step_name, fn) in enumerate(entries):
        for pos, (name, default, desc, doc) in enumerate(function_params(fn)):
            row = row_for_param(kind, step_name, name)
            rng = desc["range"]
            if rng is None and row is not None and row.range is not None:
                rng = Range(*row.range)
            spec = ParamSpec(
                name, kind, step_name, index, default, desc["type"], desc["per_class"],
                desc["optional"], rng, desc["choices"], doc, row.key if row else None,
            )  # fmt: skip
            claims.append((row is None, order, pos, spec))
    named: dict[str, tuple[int, int, ParamSpec]] = {}
    for _, order, pos, spec in sorted(claims, key=lambda c: c[:3]):
        key = spec.name
        if key in named:
            key = f"{spec.step_kind}.{spec.name}"
        if key in named:
            key = f"{spec.step_index}.{spec.name}"
        named[key] = (order, pos, spec)
    return {k: v[2] for k, v in sorted(named.items(), key=lambda kv: kv[1][:2])}


def value_for_class(name: str, value: Any, class_id: int) -> Any:
    """The value of param ``name`` for ``class_id`` (a per-class list is indexed by class id)."""
    if np.ndim(value) == 0:
        return value
    seq = list(value)
    if not 0 <= class_id < len(seq):
        raise ValueError(f"{name} has {len(seq)} per-class values; no value for class {class_id}")
    return seq[class_id]


def value_with_class(name: str, current: Any, value: Any, class_id: int, num_classes: int) -> Any:
    """``current`` with class ``class_id``'s value set to ``value``: a scalar becomes a list of
    ``num_classes`` values; a list whose values all agree collapses back to a scalar."""
    if not 0 <= class_id < max(num_classes, 1):
        raise ValueError(
            f"{name}: class {class_id} out of range: the postprocess has {num_classes} classes"
        )
    seq = list(current) if np.ndim(current) > 0 else [current] * max(num_classes, 1)
    seq[class_id] = value
    return seq[0] if all(v == seq[0] for v in seq) else seq
