"""The center of a dilation path, from what a user gives to a raveled unconstrained point.

A user names a center as PyMC's ``initvals`` are named, by the model's random variables and in
their own (constrained) space, ``{"sigma": 2.0}``, or by value variables in the unconstrained
space the samplers work in, ``{"sigma_log__": 0.69}``; or gives the raveled unconstrained vector
itself. :func:`resolve_center` turns any of these into that vector, or raises a ``ValueError``
naming what is wrong; it never drops a name it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["resolve_center"]


def _value_name(var) -> str:
    return var if isinstance(var, str) else var.name


def _as_array(label: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{label} must be a number or an array of numbers, got {value!r}."
        ) from None
    return arr


def _fit_shape(label: str, arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if arr.shape == shape:
        return arr
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    raise ValueError(
        f"{label} has shape {arr.shape}, but {what} has shape {shape} (a scalar is broadcast)."
    )


def _show(arr) -> str:
    return np.array2string(np.asarray(arr), precision=6, threshold=10)


def _names_text(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))


def resolve_center(
    model,
    center,
    value_vars: Sequence,
    *,
    base_point: Mapping[str, np.ndarray] | None = None,
    owner: str = "DilationLangevin",
) -> np.ndarray:
    """The center of the dilation path as a raveled point in unconstrained space.

    Parameters
    ----------
    model : pymc.Model
    center : dict, array_like or None
        ``None``: ``base_point``. A dict ``{name: value}`` whose names are either random
        variables of the model, with values in their own (constrained) space as for PyMC's
        ``initvals`` (``{"sigma": 2.0}``; transformed with the variable's transform, whose
        parameters are taken at the center), or value variables with values in unconstrained
        space (``{"sigma_log__": 0.69}``); a scalar is broadcast to the variable's shape and the
        variables not named keep their values in ``base_point``. An array: the raveled
        unconstrained point itself, the variables in the order of ``value_vars``.
    value_vars : sequence
        The sampled value variables (or their names), in raveled order.
    base_point : dict, optional
        A point of the model in unconstrained space; default: ``model.initial_point()``.
    owner : str
        The function the user called, for messages.

    Returns
    -------
    numpy.ndarray
        The raveled, finite center, float64, of length the total size of ``value_vars``.

    Raises
    ------
    ValueError
        For a name that is not a sampled variable (the message lists the names allowed), a
        variable given both ways, a value of the wrong shape or not a number, a constrained value
        outside the variable's support, a non-finite value, an array of the wrong length, or a
        center of another type.
    """
    names = [_value_name(v) for v in value_vars]
    if base_point is None:
        base_point = model.initial_point()
    shapes = {n: tuple(np.shape(base_point[n])) for n in names}
    dim = sum(math.prod(shapes[n]) for n in names)

    if center is None:
        point = {n: np.asarray(base_point[n], dtype=np.float64) for n in names}
    elif isinstance(center, Mapping):
        point = _point_from_dict(model, center, names, shapes, base_point, owner)
    elif isinstance(center, str | bytes) or not isinstance(
        center, Sequence | np.ndarray | int | float | np.number
    ):
        raise ValueError(
            "center must be a dict {name: value} (names of random variables in their own "
            "space, or of value variables in unconstrained space), an array of "
            f"{dim} unconstrained values, or None; got {center!r}."
        )
    else:
        vec = _as_array("center", center).ravel()
        if vec.size != dim:
            sizes = ", ".join(f"{n} {math.prod(shapes[n])}" for n in names)
            raise ValueError(
                f"The center has {vec.size} values but the sampled variables have {dim} in "
                f"unconstrained space ({sizes}); give an array of {dim} values or a dict "
                "{name: value}."
            )
        if not np.all(np.isfinite(vec)):
            raise ValueError(f"The center must be finite; got {center!r}.")
        return vec
    vec = np.concatenate([point[n].ravel() for n in names]).astype(np.float64)
    return vec


def _point_from_dict(model, center, names, shapes, base_point, owner) -> dict[str, np.ndarray]:
    sampled = set(names)
    value_to_rv = {model.rvs_to_values[rv].name: rv for rv in model.free_RVs}
    rv_to_value = {rv.name: value for value, rv in value_to_rv.items()}
    transformed = {
        value: rv for value, rv in value_to_rv.items() if model.rvs_to_transforms.get(rv)
    }
    allowed = []
    for n in names:
        rv = transformed.get(n)
        allowed += [rv.name, n] if rv is not None else [n]

    unconstrained: dict[str, np.ndarray] = {}
    constrained: dict[str, np.ndarray] = {}  # keyed by value-variable name
    for key, value in center.items():
        key_name = key if isinstance(key, str) else getattr(key, "name", None)
        if not isinstance(key_name, str):
            raise ValueError(f"center keys must be variable names; got {key!r}.")
        if key_name in sampled:
            target, value_name = unconstrained, key_name
        elif key_name in rv_to_value and rv_to_value[key_name] in sampled:
            target, value_name = constrained, rv_to_value[key_name]
        else:
            if key_name in rv_to_value or key_name in value_to_rv:
                why = f"{key_name!r} is a free variable that {owner} does not sample here"
            else:
                why = f"{key_name!r} is not a free variable of the model"
            raise ValueError(f"center has an unknown name: {why}; allowed: {_names_text(allowed)}.")
        if value_name in unconstrained or value_name in constrained:
            rv_name = value_to_rv[value_name].name
            raise ValueError(
                f"center gives {rv_name!r} twice (as {rv_name!r} in its own space and as "
                f"{value_name!r} in unconstrained space); give one of them."
            )
        target[value_name] = _as_array(f"center[{key_name!r}]", value)

    point = {n: np.asarray(base_point[n], dtype=np.float64).copy() for n in names}
    for n, arr in unconstrained.items():
        point[n] = _fit_shape(f"center[{n!r}]", arr, shapes[n], n)
    if constrained:
        _transform_constrained(model, constrained, point, base_point, value_to_rv)
    for n in names:
        if not np.all(np.isfinite(point[n])):
            raise ValueError(f"The center must be finite; it gives {n} = {_show(point[n])}.")
    return point


def _transform_constrained(model, constrained, point, base_point, value_to_rv) -> None:
    """Write the unconstrained values of the ``constrained`` entries into ``point``.

    A transform's parameters may depend on other variables (``pm.Uniform("u", 0, sigma)``);
    they are evaluated at the center, by passes in the model's order until no value changes.
    """
    import pytensor
    import pytensor.tensor as pt

    all_values = list(model.value_vars)
    rvs = {n: value_to_rv[n] for n in constrained}
    # Constrained value of each entry's variable at a point (for its shape), and the forward
    # transform of a placeholder with the variable's parameters at that point.
    own_space = model.replace_rvs_by_values([rvs[n] for n in constrained])
    fn_own = pytensor.function(
        all_values, own_space, on_unused_input="ignore", mode="FAST_COMPILE",
        allow_input_downcast=True,
    )  # fmt: skip
    full = {v.name: np.asarray(base_point[v.name]) for v in all_values}
    full.update(point)
    own = dict(zip(constrained, fn_own(*[full[v.name] for v in all_values])))

    given = {}
    for n, arr in constrained.items():
        rv_name = rvs[n].name
        given[n] = _fit_shape(f"center[{rv_name!r}]", arr, np.shape(own[n]), rv_name)
    placeholders = {
        n: pt.tensor(f"{n}_given", dtype="float64", shape=(None,) * given[n].ndim)
        for n in constrained
    }
    forward = [
        model.rvs_to_transforms[rvs[n]].forward(placeholders[n], *rvs[n].owner.inputs)
        for n in constrained
    ]
    forward = model.replace_rvs_by_values(forward)
    fn = pytensor.function(
        all_values + list(placeholders.values()),
        forward,
        on_unused_input="ignore",
        mode="FAST_COMPILE",
        allow_input_downcast=True,
    )
    for _ in range(len(constrained) + 1):
        with np.errstate(all="ignore"):
            out = fn(*[full[v.name] for v in all_values], *given.values())
        changed = False
        for n, value in zip(constrained, out):
            value = np.asarray(value, dtype=np.float64)
            if value.shape != np.shape(full[n]) or not np.array_equal(value, full[n]):
                changed = True
            full[n] = value
        if not changed:
            break
    for n in constrained:
        rv_name = rvs[n].name
        if full[n].shape != np.shape(base_point[n]):
            raise ValueError(
                f"center[{rv_name!r}] has shape {given[n].shape}, which {rv_name}'s transform "
                f"maps to shape {full[n].shape}, but {n} has shape {np.shape(base_point[n])}."
            )
        if not np.all(np.isfinite(full[n])):
            raise ValueError(
                f"center[{rv_name!r}] = {_show(constrained[n])} lies outside the support of "
                f"{rv_name} (its transform to {n} is not finite); give a value inside the "
                f"support, or {n} in unconstrained space."
            )
    # The round trip back to each variable's own space must give the value back: it does not
    # for a value off the variable's domain that the transform maps somewhere anyway (a
    # Dirichlet value that does not sum to 1).
    round_trip = fn_own(*[full[v.name] for v in all_values])
    for n, back in zip(constrained, round_trip):
        rv_name = rvs[n].name
        if not np.allclose(back, given[n], rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"center[{rv_name!r}] = {_show(constrained[n])} is not a value {rv_name} can "
                f"take (its transform maps it to a point that stands for {_show(back)}); give "
                f"a value inside the support of {rv_name}, or {n} in unconstrained space."
            )
        point[n] = full[n]
