"""Exported postprocess bundles: a folder with the JSON spec (``postprocess.json``) and, when a step is
the user's own function, one Python module (``user_steps.py``) holding its source
(:mod:`dsprobe.postprocess.capture`). The spec records the module's SHA-256.

Loading runs the module only with the caller's explicit consent (``trust=True``) and only when its
SHA-256 is the recorded one: an edited module is refused. Without consent nothing is executed and the
error says how to give it."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable, Mapping

from dsprobe.postprocess.capture import CaptureError, capture_module
from dsprobe.postprocess.registry import PostprocessError

SPEC_FILE = "postprocess.json"
MODULE_FILE = "user_steps.py"


class BundleError(PostprocessError):
    """A bundle that cannot be exported or loaded; the message names the file and what to do."""


def write_bundle(
    directory: str | Path, spec: Mapping[str, Any], user_steps: Mapping[str, Callable]
) -> Path:
    """Write ``spec`` (``Postprocess.to_dict()``) and, for ``user_steps`` (``{step name: function}``),
    the module with their source into ``directory`` (created). Returns the spec's path."""
    out = Path(directory)
    spec = dict(spec)
    if user_steps:
        fns = list(dict.fromkeys(user_steps.values()))
        try:
            text, names = capture_module(fns)
        except CaptureError as exc:
            raise BundleError(f"cannot export to {out}: {exc}") from None
        data = text.encode()
        spec["bundle"] = {
            "module": MODULE_FILE,
            "sha256": hashlib.sha256(data).hexdigest(),
            "functions": {step: names[id(fn)] for step, fn in user_steps.items()},
        }
    out.mkdir(parents=True, exist_ok=True)
    if user_steps:
        (out / MODULE_FILE).write_bytes(data)
    elif (out / MODULE_FILE).exists():  # a stale module of an earlier export would mislead
        (out / MODULE_FILE).unlink()
    path = out / SPEC_FILE
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def read_spec(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(spec file, spec dict)`` of a bundle folder or a spec file."""
    p = Path(path)
    if p.is_dir():
        p = p / SPEC_FILE
    try:
        spec = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise PostprocessError(f"{p}: cannot read postprocess spec: {exc}") from None
    if not isinstance(spec, dict):
        raise PostprocessError(
            f"{p}: not a dsprobe postprocess spec (format={type(spec).__name__!r})"
        )
    return p, spec


def bundle_functions(spec_path: Path, spec: Mapping[str, Any], trust: bool) -> dict[str, Callable]:
    """``{step name: function}`` from the bundle's module named in ``spec`` ({} when it has none).
    Imports the module only with ``trust`` and only when its SHA-256 is the recorded one."""
    info = spec.get("bundle")
    if not info:
        return {}
    module = spec_path.parent / info["module"]
    names = ", ".join(sorted(set(info["functions"].values())))
    if not trust:
        raise BundleError(
            f"{spec_path.parent}: this postprocess runs your own code ({module.name}: {names}); "
            "dsprobe imports it only with your consent: read the module, then pass trust=True "
            "(Postprocess.load(path, trust=True), attach_postprocess(pgie, path, trust=True), "
            "or the example app's --trust-bundle). Nothing was executed."
        )
    try:
        data = module.read_bytes()
    except OSError as exc:
        raise BundleError(f"{module}: cannot read the bundle's module: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise BundleError(
            f"{module}: edited since it was exported (SHA-256 {digest[:16]}..., the spec records "
            f"{info['sha256'][:16]}...); refusing to run it. Export the bundle again from the notebook."
        )
    mod_name = f"dsprobe_bundle_{digest[:16]}"
    mod = sys.modules.get(mod_name)
    if mod is None:
        mod = types.ModuleType(mod_name)
        mod.__file__ = str(module)
        sys.modules[mod_name] = mod
        try:  # the bytes whose hash was checked, not a second read of the file
            exec(compile(data, str(module), "exec"), mod.__dict__)
        except Exception as exc:
            del sys.modules[mod_name]
            raise BundleError(
                f"{module}: importing it failed: {type(exc).__name__}: {exc}"
            ) from None
    try:
        return {step: getattr(mod, attr) for step, attr in info["functions"].items()}
    except AttributeError as exc:
        raise BundleError(f"{module}: {exc}") from None
