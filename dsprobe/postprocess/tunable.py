"""A Postprocess's params by name (the :class:`TunableParams` part of
:class:`~dsprobe.postprocess.pipeline.Postprocess`): every param of its own resolved step functions,
registered or the user's, read and set without the registry or any import."""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from dsprobe.postprocess.filters import object_filters
from dsprobe.postprocess.params import (
    ParamSpec,
    function_params,
    param_specs,
    plain,
    value_for_class,
    value_with_class,
)
from dsprobe.postprocess.registry import Step

P = TypeVar("P", bound="TunableParams")  # the Postprocess this is mixed into


class TunableParams:
    """Params by name; mixed into Postprocess, which provides ``steps``, the resolved functions,
    ``num_classes`` / ``labels`` and the one copy path."""

    def step_function(self, index: int) -> Callable:
        """The resolved function of step ``index`` (registered or the user's own)."""
        return self._fns[index]

    def resolved_params(self, index: int) -> dict[str, Any]:
        """Every keyword param of step ``index``: the spec's value, else its function's default."""
        defaults = {name: d for name, d, _, _ in function_params(self._fns[index])}
        return {**defaults, **self.steps[index].params}

    def param_specs(self) -> dict[str, ParamSpec]:
        """Every tunable param by name (:class:`~dsprobe.postprocess.params.ParamSpec`), read from
        this Postprocess's own step functions (registered or the user's: no import, no registry).
        A name two steps take belongs to the step nvinfer's key table names (``pre_cluster_threshold``
        -> ``filter:threshold``), else to the first; the other is listed as ``"kind.name"``.
        nvinfer's object-filter params are listed even without a ``filter:objects`` step
        (``step_index`` None: setting one adds the step after scaling)."""
        return param_specs(self.steps, self._fns, object_filters)

    def get_param(self, name: str, class_id: int | None = None) -> Any:
        """Current value of param ``name`` (see :meth:`param_specs`; the function's default when the
        spec leaves it out); with ``class_id`` the value for that class (per-class lists are indexed
        by class id). ValueError naming the settable params for a name no step takes."""
        spec = self._param_spec(name)
        value = (
            spec.default
            if spec.step_index is None
            else self.steps[spec.step_index].params.get(spec.name, spec.default)
        )
        return value if class_id is None else value_for_class(name, value, class_id)

    def set_params(self: P, params: Mapping[str, Any], class_id: int | None = None) -> P:
        """A new Postprocess with ``params`` (``{name: value}``, names as :meth:`param_specs`) set in
        the steps that own them (nvinfer's ``filter:objects`` added after the scale step when one of
        its params is set). With ``class_id`` each value is set for that class only (a scalar becomes
        a per-class list of ``num_classes`` values; a list whose values all agree collapses back to a
        scalar). The result is checked like any Postprocess (PostprocessError naming the step)."""
        steps = self._step_copies()
        specs = self.param_specs()
        n = int(self.num_classes or len(self.labels))
        for name, value in params.items():
            spec = self._param_spec(name, specs)
            if spec.step_index is None:
                at = next(
                    (k + 1 for k in range(len(steps) - 1, -1, -1) if steps[k].kind == "scale"),
                    len(steps),
                )
                steps.insert(at, Step(spec.step_kind, spec.step_name, {}))
                specs = param_specs(
                    steps, [*self._fns[:at], object_filters, *self._fns[at:]], object_filters
                )
                spec = specs[name]
            target = steps[spec.step_index]  # type: ignore[index]
            value = plain(value)
            if class_id is not None:
                current = target.params.get(spec.name, spec.default)
                value = value_with_class(name, current, value, class_id, n)
            target.params[spec.name] = value
        return self._copy(steps)

    def _param_spec(self, name: str, specs: Mapping[str, ParamSpec] | None = None) -> ParamSpec:
        specs = self.param_specs() if specs is None else specs
        if name not in specs:
            raise ValueError(
                f"no step of {self} takes a param {name!r}; settable: {', '.join(specs)}"
            )
        return specs[name]
