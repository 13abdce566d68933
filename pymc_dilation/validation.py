"""Checks of user options that raise clear ``ValueError`` messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "check_probability",
    "check_positive_int",
    "check_choice",
    "check_center",
    "check_bool",
    "check_positive_float",
    "check_random_seed",
    "check_model",
    "check_continuous_free_vars",
    "check_names",
]

MODEL_CENTER_HINT = (
    "Pass center={name: value} (random-variable names with values in their own space, as "
    "PyMC's initvals, or value-variable names in unconstrained space) where the model's log "
    "density is finite, or set initvals on the model so that model.initial_point() is such a "
    "point."
)


def check_probability(name: str, value: float) -> float:
    """``value`` as a float in the open interval ``(0, 1)``, or a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")
    if not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value!r}.")
    return float(value)


def check_positive_int(name: str, value: int, zero: bool = False) -> int:
    """``value`` as an int ``>= 1`` (``>= 0`` with ``zero=True``), or a ``ValueError``."""
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        kind = "a non-negative" if zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}.")
    return int(value)


def check_choice(name: str, value, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, or a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
    return value


def check_center(
    center: np.ndarray,
    logp_grad: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    extra: np.ndarray,
    var_names: Sequence[str],
    dim: int,
    hint: str = MODEL_CENTER_HINT,
) -> np.ndarray:
    """The center as a float vector with a finite log density and gradient, or a ``ValueError``.

    Parameters
    ----------
    center : numpy.ndarray
        Raveled center in unconstrained space.
    logp_grad : callable
        ``logp_grad(x, extra) -> (logp, grad)``.
    extra : numpy.ndarray
        Values of the variables not sampled.
    var_names : sequence of str
        Names of the sampled (value) variables, for the message.
    dim : int
        Expected length of the raveled center.
    hint : str
        What the user can do, ending the message (default: advice for a PyMC model).
    """
    center = np.asarray(center, dtype=np.float64).ravel()
    if center.size != dim:
        raise ValueError(
            f"The center has {center.size} values but the sampled variables "
            f"({', '.join(var_names)}) have {dim} in unconstrained space."
        )
    if not np.all(np.isfinite(center)):
        raise ValueError("The center of the dilation path must be finite.")
    lp, grad = logp_grad(center, extra)
    if not (np.isfinite(lp) and np.all(np.isfinite(grad))):
        raise ValueError(
            f"The log density at the center of the dilation path is {lp} (variables "
            f"{', '.join(var_names)}); the path shrinks the posterior onto this point, so it must "
            f"lie inside the support. {hint}"
        )
    return center


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool (Python or NumPy), or a ``ValueError``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def check_positive_float(name: str, value) -> float:
    """``value`` as a finite float ``> 0``, or a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_random_seed(name: str, value, *, chains: int | None = None, legacy: bool = True):
    """``value`` if it can seed NumPy (and PyMC), or a ``ValueError`` saying what can.

    Accepted: None, a non-negative integer, a sequence of them (one per chain when ``chains``
    is given), a ``numpy.random.Generator``, ``BitGenerator`` or ``SeedSequence``, and with
    ``legacy=True`` a ``numpy.random.RandomState`` (``pm.sample`` takes one).
    """
    allowed = "None, a non-negative integer, a sequence of non-negative integers"
    allowed += " (one per chain)" if chains is not None else ""
    allowed += " or a numpy.random.Generator"
    kinds = (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)
    if value is None or isinstance(value, kinds):
        return value
    if legacy and isinstance(value, np.random.RandomState):
        return value

    def is_seed(v) -> bool:
        return not isinstance(v, bool | np.bool_) and isinstance(v, int | np.integer) and v >= 0

    if is_seed(value):
        return value
    if isinstance(value, list | tuple | np.ndarray) and np.ndim(value) == 1 and len(value) > 0:
        if all(is_seed(v) for v in value):
            if chains is not None and len(value) != chains:
                raise ValueError(
                    f"{name} has {len(value)} seeds but there are {chains} chains; give one "
                    "seed per chain, or a single integer."
                )
            return value
    raise ValueError(f"{name} must be {allowed}; got {value!r}.")


def check_model(model, owner: str):
    """``model``, or the model in context if None, or a ``ValueError`` naming ``owner``."""
    import pymc as pm

    if model is not None:
        if not isinstance(model, pm.Model):
            raise ValueError(
                f"model must be a pymc.Model or None (the model in context); "
                f"got {type(model).__name__}."
            )
        return model
    model = pm.Model.get_context(error_if_none=False)
    if model is None:
        raise ValueError(f"{owner} needs a model: call it inside `with model:` or pass model=.")
    return model


def check_continuous_free_vars(model, owner: str) -> None:
    """A ``ValueError`` naming ``owner`` if ``model`` has no continuous free variable."""
    if model.continuous_value_vars:
        return
    if not model.value_vars:
        what = "no free variables (nothing to sample: every variable is observed or fixed)"
    else:
        names = ", ".join(repr(v.name) for v in model.value_vars)
        what = f"only discrete free variables ({names})"
    raise ValueError(
        f"{owner} samples continuous variables with gradients, and this model has {what}. "
        "Use pm.sample with pm.Metropolis or another step method for discrete variables."
    )


def check_names(name: str, value, allowed: Sequence[str]) -> list[str]:
    """``value`` (a name or a sequence of names) as a list, each one of ``allowed``."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{name} must be a name or a list of names among {', '.join(map(repr, allowed))}; "
            f"got {value!r}."
        )
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "an empty list"
        raise ValueError(f"{name} has {what}; allowed: {', '.join(map(repr, allowed))}.")
    return list(names)
