"""The source of the user's step functions as one self-contained Python module (for an exported
bundle, :mod:`dsprobe.postprocess.bundle`).

For each function: its own source (decorators dropped: the bundle hands the function to the
Postprocess by its step name), and for every global name it uses (body, defaults, annotations):

* a module -> ``import module as name``;
* a function or class defined in the function's own module (a notebook's ``__main__`` included) ->
  its source too, recursively;
* an object importable from another module -> ``from module import attr as name``;
* a constant (numbers, strings, bytes, None, and tuples / lists / dicts / sets of them) ->
  ``name = <repr>``.

Anything else is refused with :class:`CaptureError` naming the object and why: a lambda, a closure
over local variables, a function wrapped by a decorator, an object with neither source nor an
import path (an array or an instance built in the notebook).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import textwrap
import types
from typing import Any, Callable, Sequence

HEADER = (
    '"""User postprocess steps exported by dsprobe (Postprocess.export). The bundle\'s spec records\n'
    'this file\'s SHA-256: edit the functions in the notebook and export again, not here."""\n'
)


class CaptureError(ValueError):
    """A function (or a global it uses) that cannot be written into a self-contained module."""


def capture_module(functions: Sequence[Callable]) -> tuple[str, dict[int, str]]:
    """The module text holding ``functions`` and what they need, and ``{id(fn): name in module}``."""
    cap = _Capture()
    for fn in functions:
        cap.function(fn, fn.__name__, f"step function {fn.__name__!r}")
    return cap.text(), {id(fn): fn.__name__ for fn in functions}


class _Capture:
    def __init__(self) -> None:
        self.imports: dict[str, str] = {}  # name -> import line
        self.constants: dict[str, str] = {}  # name -> assignment line
        self.sources: dict[str, str] = {}  # name -> source of a def / class
        self.bound: dict[str, Any] = {}  # name -> the object it holds in the module

    def bind(self, name: str, obj: Any, why: str) -> bool:
        """Claim ``name`` for ``obj``; False when it already holds ``obj`` (nothing to do)."""
        if name in self.bound:
            if self.bound[name] is obj:
                return False
            raise CaptureError(f"{why}: two different objects are both named {name!r}")
        self.bound[name] = obj
        return True

    def function(self, fn: Any, name: str, why: str) -> None:
        label = getattr(fn, "__qualname__", name)
        if getattr(fn, "__name__", "") == "<lambda>":
            raise CaptureError(f"{why}: {name!r} is a lambda; define it with def at module level")
        if getattr(fn, "__closure__", None):
            local = ", ".join(fn.__code__.co_freevars)
            raise CaptureError(
                f"{why}: {label!r} is a closure over local variable(s) {local}; "
                "define it at module level and pass those values as params"
            )
        if hasattr(fn, "__wrapped__"):
            raise CaptureError(
                f"{why}: {label!r} is wrapped by a decorator; export the plain function"
            )
        if not self.bind(name, fn, why):
            return
        source = _source(fn, label, why)
        if isinstance(fn, type):
            self.sources[name] = source
            names = _names_in(source)
        else:
            self.sources[name] = (
                source if fn.__name__ == name else f"{source}\n\n{name} = {fn.__name__}"
            )
            names = _global_names(fn.__code__, source)
        self.globals_of(fn, names, label)

    def globals_of(self, owner: Any, names: set[str], label: str) -> None:
        space = getattr(owner, "__globals__", None)
        if space is None:  # a class: its module's namespace
            module = inspect.getmodule(owner)
            space = vars(module) if module is not None else {}
        for name in sorted(names):
            if name not in space or name == "__future__":
                continue
            obj = space[name]
            if obj is getattr(builtins, name, object()):
                continue
            self.global_(name, obj, owner, f"{label!r} uses {name!r}")

    def global_(self, name: str, obj: Any, owner: Any, why: str) -> None:
        if isinstance(obj, types.ModuleType):
            if obj.__name__ == "__main__" or obj.__spec__ is None:
                raise CaptureError(f"{why}: module {obj.__name__!r} cannot be imported elsewhere")
            if self.bind(name, obj, why):
                line = f"import {obj.__name__}"
                self.imports[name] = line if obj.__name__ == name else f"{line} as {name}"
            return
        if _is_constant(obj):
            if self.bind(name, obj, why):
                self.constants[name] = f"{name} = {obj!r}"
            return
        home = getattr(obj, "__module__", None)
        if callable(obj) and home == getattr(owner, "__module__", None):
            self.function(obj, name, why)  # a helper of the same module (or notebook): its source
            return
        path = _import_path(obj, name)
        if path is None:
            raise CaptureError(
                f"{why}: a {type(obj).__name__} that has no source to copy and cannot be imported "
                "from a module; build it inside the function, or import it from a module"
            )
        if self.bind(name, obj, why):
            mod, attr = path
            self.imports[name] = f"from {mod} import {attr}" + (
                f" as {name}" if attr != name else ""
            )

    def text(self) -> str:
        parts = [HEADER]
        plain = sorted(v for v in self.imports.values() if v.startswith("import "))
        froms = sorted(v for v in self.imports.values() if v.startswith("from "))
        parts.append("\n".join(["from __future__ import annotations", "", *plain, *froms]) + "\n")
        if self.constants:
            parts.append("\n".join(self.constants.values()) + "\n")
        parts += [src + "\n" for src in self.sources.values()]
        return "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def _source(obj: Any, label: str, why: str) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        raise CaptureError(f"{why}: no source for {label!r} ({exc})") from None
    tree = ast.parse(src)
    node = tree.body[0]
    if (
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.decorator_list
    ):
        src = "\n".join(src.splitlines()[node.lineno - 1 :]) + "\n"  # from the def line on
    return src.rstrip("\n")


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _names_in(source: str) -> set[str]:
    """Every name read in ``source`` (annotations and defaults included)."""
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def _global_names(code: types.CodeType, source: str) -> set[str]:
    """Globals a function reads: names in its body that its code looks up globally (locals and
    attribute names excluded), and every name in its signature's annotations and defaults (lazy
    annotations are strings to the code object)."""
    node = ast.parse(source).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    a = node.args
    signature = [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs if x.annotation]
    signature += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation]
    signature += [d for d in a.defaults + a.kw_defaults if d is not None]
    signature += [node.returns] if node.returns else []
    in_signature = {n.id for expr in signature for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return (_names_in(source) & _code_names(code)) | in_signature


_LITERALS = (type(None), bool, int, float, complex, str, bytes, tuple, list, set, dict)


def _is_constant(obj: Any) -> bool:
    """A plain literal whose ``repr`` reads back as the same value."""
    if type(obj) not in _LITERALS:
        return False
    try:
        return ast.literal_eval(repr(obj)) == obj
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _import_path(obj: Any, name: str) -> tuple[str, str] | None:
    """``(module, attribute)`` from which ``obj`` can be imported (not ``__main__``), or None."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or module == "__main__":
        return None
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    for attr in dict.fromkeys(
        a for a in (getattr(obj, "__qualname__", None), getattr(obj, "__name__", None), name) if a
    ):
        target: Any = mod
        for part in attr.split("."):
            target = getattr(target, part, None)
        if target is obj and "." not in attr:
            return module, attr
    return None
