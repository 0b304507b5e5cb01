"""Step registry: registration, lookup errors, user functions only when allowed."""

import pytest

from dsprobe.postprocess import registry
from dsprobe.postprocess.registry import UnknownStepError, get_step, import_function, register


def test_register_and_get(monkeypatch):
    monkeypatch.setattr(registry, "_loaded", True)  # isolate from built-in steps
    monkeypatch.setitem(registry._REGISTRY, "cluster", {})

    @register("cluster", "mine")
    def mine(dets, ctx):
        return dets

    assert get_step("cluster", "mine") is mine
    with pytest.raises(
        UnknownStepError, match="unknown cluster step 'nope'; registered cluster steps: mine"
    ):
        get_step("cluster", "nope")
    with pytest.raises(ValueError, match="already registered"):
        register("cluster", "mine")(lambda d, c: d)


def test_user_function_needs_permission(monkeypatch):
    monkeypatch.setattr(registry, "_loaded", True)
    with pytest.raises(PermissionError, match="allow_import=True"):
        get_step("decode", "os.path:join")
    assert get_step("decode", "os.path:join", allow_import=True) is import_function("os.path:join")


def test_import_errors_name_the_reference():
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        import_function("no_such_module_xyz:f")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        import_function("os.path:nope")
    with pytest.raises(ValueError, match="package.module:function"):
        import_function("os.path")


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown step kind"):
        register("render", "x")
