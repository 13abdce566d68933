"""Automatic non-centering of location-scale variables: funnels sampled as the user wrote them.

A centered hierarchy, ``theta ~ Normal(mu, tau)`` with ``tau`` a free variable, has a funnel
for a posterior: the curvature in ``theta`` grows without bound as ``tau`` shrinks, and no step
size or constant preconditioner fits both ends. The samplers therefore work in other
coordinates. For every sampled variable ``x`` of a location-scale family
(:data:`LOCATION_SCALE`) whose scale depends on another sampled variable, with location ``m``
and scale ``s`` (graphs of the other variables), they sample ``z`` with

``x = m + s**(1 - w) * (z - w * m)``

elementwise, a centering weight ``w`` per scalar: ``w = 1`` is the model as written
(``z = x``), ``w = 0`` the non-centered form (``x = m + s z``). This is the partially
non-centered parameterization of Papaspiliopoulos, Roberts and Sköld (2007) in the form
Gorinova, Moore and Hoffman (2020) learn by variational inference (VIP); here ``w`` is chosen
from the curvature (:func:`centering_weights`). The log density in ``z`` is the model's at
``x(z)`` plus the log Jacobian, ``sum((1 - w) * log s)`` (for an ``MvNormal`` see
``_Planned.to_model``).

Exact: the change of variables, for any weights and any distribution (the weights decide only
how well conditioned the sampled density is); the evidence is unchanged. Heuristic: the
choice of the weights. Nested hierarchies are handled in declaration order (a location or
scale that is itself reparameterized enters through its own ``x(z)``).

For the normal-normal model (``x_i ~ N(m, s)``, data ``y_i ~ N(x_i, d_i)``) the weight that
makes ``z_i``'s conditional scale independent of ``s`` is ``s**2 / (s**2 + d_i**2)``: near 0
(non-centered) where the data are weak, near 1 (as written) where they pin ``x_i`` down.
:func:`centering_weights` evaluates it at the scales of the hyperparameters' Laplace-marginal
mode and rounds it to 0 or 1 (a weight strictly between leaves a weaker funnel).

The sampled state lives in ``z``; draws are mapped back (``to_model``), so results hold the
variables as the user declared them, with their names, dims and coords.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import graph_replace, vectorize_graph
from pytensor.graph.traversal import ancestors

from pymc_dilation.graph_cache import graph_key, recall, remember

__all__ = [
    "LOCATION_SCALE",
    "Reparameterization",
    "plan_reparameterization",
    "non_centered_values",
    "centered_coordinates",
    "centering_weights",
    "choose_centering",
]

_log = logging.getLogger("pymc")  # where pm.sample logs what it does


def choose_centering(logp, q0: np.ndarray, extra: np.ndarray, owner: str) -> None:
    """Set ``logp.reparam``'s weights by :func:`centering_weights` from ``q0`` (the model's
    coordinates) and log, as PyMC logs its own set-up, which variables are sampled
    non-centered. Both samplers call this once, before sampling."""
    reparam = logp.reparam
    reparam.weights = centering_weights(logp, q0, extra)
    if reparam.describe():
        _log.info(
            "%s: sampling %s (a funnel otherwise; reparameterize=False samples the model as "
            "written). Draws are reported as declared.",
            owner,
            reparam.describe(),
        )


LOCATION_SCALE = {
    # RandomVariable class: (value transform, index of the location, of the scale in its params)
    "NormalRV": (None, 0, 1),
    "StudentTRV": (None, 1, 2),
    "CauchyRV": (None, 0, 1),
    "LaplaceRV": (None, 0, 1),
    "LogisticRV": (None, 0, 1),
    "GumbelRV": (None, 0, 1),
    "LogNormalRV": ("LogTransform", 0, 1),  # log x = m + s * standard normal
    "MvNormalRV": (None, 0, 1),  # x = m + cholesky(cov) z: the scale is a matrix
}
"""Families reparameterized, with the transform their value variable must have (a user's own
transform leaves a variable as written)."""
WALKS = ("RandomWalkRV",)
"""Random walks (``pm.GaussianRandomWalk``, ``pm.RandomWalk``) whose initial and innovation
distributions are location-scale families of :data:`LOCATION_SCALE` (elementwise, untransformed):
their increments are reparameterized, ``x = cumsum(d)`` along the last axis (a centered random
walk whose step sd is sampled is a funnel: stochastic volatility)."""

CENTERED_ABOVE = 0.9
"""A scalar is sampled as written when ``w > 0.9`` at the Laplace-marginal mode: data at least
nine times as precise as the prior there (a conditional sd under a third of the scale), and
non-centered otherwise. The scale's posterior reaches far below its mode (centered radon:
``sigma_b`` 0.04 to 0.53, mode 0.25), and a scalar centered at ``w > 0.5`` sat in a funnel's
neck at the low end (9 divergences in 4 chains, all at ``sigma_b`` below 0.09)."""
HUTCHINSON_PROBES = 4
"""Random ±1 probes of the Hessian's diagonal; exact with one where the reparameterized
variables are conditionally independent (hierarchies), an average otherwise (a latent field)."""


class Reparameterization:
    """The reparameterized scalars of a sampled vector, their centering weights, and the maps
    between the sampler's coordinates ``z`` and the model's.

    Built by :func:`pymc_dilation.model.compile_model_logp`; the weights are the tail of the
    ``extra`` vector the compiled log density takes, so changing them recompiles nothing.

    Attributes
    ----------
    names : tuple of str
        The reparameterized variables, in the model's order.
    sizes : tuple of int
        Their numbers of scalars.
    index : numpy.ndarray
        Positions of their scalars in the raveled sampled vector.
    weights : numpy.ndarray
        The centering weight ``w`` of each of those scalars (1: as written, 0: non-centered).
    """

    def __init__(self, names, sizes, index, inputs, to_model, from_model):
        self.names = tuple(names)
        self.sizes = tuple(sizes)
        self.index = np.asarray(index, dtype=np.int64)
        self.weights = np.ones(self.index.size)
        self._inputs = inputs
        self._graphs = {"to_model": to_model, "from_model": from_model}
        self._functions: dict = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_functions"] = {}
        return state

    def _function(self, name: str):
        """The compiled map ``name`` (rows and ``extra`` in); a graph compiled before in this
        process is found again by its key (:func:`~pymc_dilation.graph_cache.graph_key`)
        without PyTensor's rewrites: compiling both maps was 0.86 s of a warm 2.3 s
        ``pm.sample`` call on a centered 200-group hierarchy."""
        fn = self._functions.get(name)
        if fn is None:
            flat, extra = self._inputs
            # Keyed by the graph of one row: vectorizing it over rows is itself a rewrite
            # (60 ms of a warm eight-schools step's construction).
            mode = f"reparameterization by rows, {pytensor.config.mode}, {pytensor.config.linker}"
            key = graph_key([flat, extra], self._graphs[name], mode)
            fn = None if key is None else recall(key, lambda _: None)
            if fn is None:
                rows = pt.matrix("rows", dtype="float64")
                outputs = vectorize_graph(self._graphs[name], {flat: rows})
                fn = pytensor.function([rows, extra], outputs, on_unused_input="ignore")
                fn.trust_input = True
                if key is not None:
                    remember(key, fn, None)
            self._functions[name] = fn
        return fn

    def to_model(self, zs: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of sampler coordinates to the model's; also each row's log Jacobian."""
        zs = np.ascontiguousarray(np.atleast_2d(zs), dtype=np.float64)
        qs, log_jacobian = self._function("to_model")(zs, np.asarray(extra, dtype=np.float64))
        return np.asarray(qs), np.broadcast_to(log_jacobian, (len(zs),))

    def from_model(self, qs: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of model coordinates to the sampler's; also the reparameterized scalars'
        scales there."""
        qs = np.ascontiguousarray(np.atleast_2d(qs), dtype=np.float64)
        zs, scales = self._function("from_model")(qs, np.asarray(extra, dtype=np.float64))
        return np.asarray(zs), np.asarray(scales)

    def describe(self) -> str:
        """What is sampled how, in words, for the log: ``"theta non-centered"``, or
        ``"alpha non-centered (80 of 85 scalars; the rest as written)"``."""
        parts, start = [], 0
        for name, size in zip(self.names, self.sizes, strict=True):
            written = int(np.sum(self.weights[start : start + size] > 0.5))
            start += size
            if written == 0:
                parts.append(f"{name} non-centered")
            elif written < size:
                parts.append(
                    f"{name} non-centered ({size - written} of {size} scalars; the rest as written)"
                )
        return "; ".join(parts)

    def summary(self) -> dict[str, float]:
        """Mean centering weight of each reparameterized variable."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = float(np.mean(self.weights[start : start + size]))
            start += size
        return out


def _location_scale(rv, transform, shape: tuple[int, ...]):
    """``(location, scale)`` graphs of ``rv`` if it is a location-scale variable sampled in its
    family's own value space (a single vector for ``MvNormal``), else None. For a random walk
    (:data:`WALKS`): those of its increments, initial value first, in the walk's shape."""
    kind = type(rv.owner.op).__name__
    if kind in WALKS:
        return None if transform is not None else _walk_location_scale(rv, shape)
    spec = LOCATION_SCALE.get(kind)
    if spec is None or (kind == "MvNormalRV" and rv.type.ndim != 1):
        return None
    wanted, i_loc, i_scale = spec
    if (None if transform is None else type(transform).__name__) != wanted:
        return None
    params = rv.owner.op.dist_params(rv.owner)
    return params[i_loc], params[i_scale]


def _walk_location_scale(rv, shape: tuple[int, ...]):
    """Location and scale of a random walk's increments ``d = (x[..., 0], diff(x))``.

    PyMC's walk joins its initial draw (shape ``(1, *batch)``) and innovations (``(T - 1,
    *batch)``) with the time axis moved last and takes their cumulative sum; the parameters are
    laid out the same way here.
    """
    if len(shape) == 0 or shape[-1] < 2:
        return None
    parts = rv.owner.op.dist_params(rv.owner)[:2]  # initial distribution, innovations
    pieces = []
    for part, steps in zip(parts, (1, shape[-1] - 1), strict=True):
        spec = LOCATION_SCALE.get(type(part.owner.op).__name__) if part.owner else None
        if spec is None or spec[0] is not None or type(part.owner.op).__name__ == "MvNormalRV":
            return None
        params = part.owner.op.dist_params(part.owner)
        target = (steps, *shape[:-1])
        pieces.append(
            [pt.moveaxis(_broadcast(params[i], target), 0, -1) for i in (spec[1], spec[2])]
        )
    (init_loc, init_scale), (step_loc, step_scale) = pieces
    return pt.concatenate([init_loc, step_loc], axis=-1), pt.concatenate(
        [init_scale, step_scale], axis=-1
    )


@dataclass(frozen=True)
class _Planned:
    """One reparameterized variable: its location and scale (a covariance matrix when
    ``matrix``; its increments' when ``walk``) as graphs of the value variables."""

    name: str
    shape: tuple[int, ...]
    loc: object
    scale: object
    matrix: bool = False
    walk: bool = False

    def to_model(self, loc, scale, z, w):
        """``x(z)`` and the log Jacobian of the map, given the location and scale graphs.

        Elementwise: ``x = m + s**(1 - w) (z - w m)``. A covariance ``C = L Lᵀ``:
        ``x = (diag(w) + diag(1 - w) L) z + (1 - w) m``, a lower-triangular map whose log
        Jacobian is ``sum(log(w + (1 - w) diag(L)))``; ``w = 0`` is ``x = m + L z``.
        """
        loc_b = _broadcast(loc, self.shape)
        if self.matrix:
            chol = pt.linalg.cholesky(pt.cast(scale, "float64"))
            lower = pt.diag(w) + (1.0 - w)[:, None] * chol
            x = pt.dot(lower, z) + (1.0 - w) * loc_b
            return x, pt.sum(pt.log(w + (1.0 - w) * pt.diag(chol)))
        log_scale = pt.log(_broadcast(scale, self.shape))
        x = loc_b + pt.exp((1.0 - w) * log_scale) * (z - w * loc_b)
        if self.walk:  # x above is the increments; the cumulative sum has Jacobian 1
            x = pt.cumsum(x, axis=-1)
        return x, pt.sum((1.0 - w) * log_scale)

    def from_model(self, loc, scale, x, w):
        """``z(x)``, and each scalar's prior scale given the others: ``s``, or for a
        covariance ``1 / sqrt(diag(C⁻¹))`` (so that ``1 / s**2`` is the prior's share of the
        log density's curvature in that scalar)."""
        loc_b = _broadcast(loc, self.shape)
        if self.matrix:
            chol = pt.linalg.cholesky(pt.cast(scale, "float64"))
            lower = pt.diag(w) + (1.0 - w)[:, None] * chol
            z = pt.linalg.solve_triangular(lower, x - (1.0 - w) * loc_b, lower=True)
            inverse = pt.linalg.solve_triangular(chol, pt.eye(self.shape[0]), lower=True)
            return z, 1.0 / pt.sqrt(pt.sum(inverse**2, axis=0))
        scale_b = _broadcast(scale, self.shape)
        if self.walk:
            x = pt.concatenate([x[..., :1], pt.diff(x, axis=-1)], axis=-1)
        z = w * loc_b + (x - loc_b) * pt.exp((w - 1.0) * pt.log(scale_b))
        if self.walk:  # x[t] enters increments t and t + 1
            precision = scale_b**-2
            following = pt.concatenate([precision[..., 1:], pt.zeros_like(x[..., :1])], -1)
            return z, 1.0 / pt.sqrt(precision + following)
        return z, scale_b


def plan_reparameterization(frozen, sampled: dict, order: list[str]) -> list[_Planned]:
    """The sampled variables to reparameterize, in declaration order (``order``: the value
    variables' names in the user's model, where a variable comes after those it depends on;
    the frozen copy's own order is another).

    A variable qualifies when its family is in :data:`LOCATION_SCALE` (or it is a random walk
    of :data:`WALKS`), its scale depends on a
    sampled variable (a funnel; a constant scale makes none), and neither its location nor its
    scale depends on a variable another step method samples (they would change the
    coordinates between draws).

    Parameters
    ----------
    frozen : pymc.Model
        The model with its data frozen into constants.
    sampled : dict
        ``{name: shape}`` of the value variables the step samples.
    """
    extra_values = {v for v in frozen.value_vars if v.name not in sampled}
    sampled_values = {v for v in frozen.value_vars if v.name in sampled}
    planned = []
    rank = {name: i for i, name in enumerate(order)}
    for rv in sorted(frozen.free_RVs, key=lambda rv: rank[frozen.rvs_to_values[rv].name]):
        value = frozen.rvs_to_values[rv]
        if value.name not in sampled:
            continue
        found = _location_scale(rv, frozen.rvs_to_transforms.get(rv), tuple(sampled[value.name]))
        if found is None:
            continue
        loc, scale = frozen.replace_rvs_by_values(list(found))
        if not set(ancestors([scale])) & sampled_values:
            continue
        if set(ancestors([loc, scale])) & extra_values:
            continue
        kind = type(rv.owner.op).__name__
        planned.append(
            _Planned(
                value.name,
                tuple(sampled[value.name]),
                loc,
                scale,
                matrix=kind == "MvNormalRV",
                walk=kind in WALKS,
            )
        )
    return planned


def _broadcast(graph, shape):
    return pt.broadcast_to(pt.cast(graph, "float64"), shape)


def non_centered_values(frozen, pieces: dict, plan: list[_Planned], weights_flat):
    """The model's value variables as functions of the sampled coordinates ``z``.

    Parameters
    ----------
    frozen : pymc.Model
        The model with its data frozen into constants.
    pieces : dict
        ``{value variable: its piece of the flat inputs}``: ``z`` for the sampled variables.
    plan : list
        From :func:`plan_reparameterization`, in declaration order: a location or scale that
        is itself reparameterized enters through its own ``x(z)``, built before.
    weights_flat : TensorVariable
        The centering weights of every reparameterized scalar, in the plan's order.

    Returns
    -------
    values : dict
        ``{value variable: graph of z}`` (the model's coordinates).
    log_jacobian : TensorVariable
        The map's log Jacobian summed over the reparameterized variables
        (``_Planned.to_model``).
    """
    by_name = {v.name: v for v in frozen.value_vars}
    values = dict(pieces)
    log_jacobian, offset = pt.constant(0.0, dtype="float64"), 0
    for planned in plan:
        value = by_name[planned.name]
        size = int(np.prod(planned.shape))
        loc, scale = graph_replace([planned.loc, planned.scale], values, strict=False)
        w = weights_flat[offset : offset + size].reshape(planned.shape)
        x, log_det = planned.to_model(loc, scale, pieces[value], w)
        values[value] = x.astype(value.dtype)
        log_jacobian = log_jacobian + log_det
        offset += size
    return values, log_jacobian


def centered_coordinates(pieces: dict, plan: list[_Planned], weights_flat):
    """``z`` of every planned variable, and its scale, from the model's own coordinates.

    ``pieces`` maps value variables to their pieces of a point in the model's coordinates.
    Returns ``{name: z graph}`` and the scales broadcast to each variable's shape, raveled and
    joined in the plan's order.
    """
    z, scales, offset = {}, [], 0
    by_name = {value.name: piece for value, piece in pieces.items()}
    for planned in plan:
        size = int(np.prod(planned.shape))
        loc, scale = graph_replace([planned.loc, planned.scale], pieces, strict=False)
        w = weights_flat[offset : offset + size].reshape(planned.shape)
        z[planned.name], scale_b = planned.from_model(loc, scale, by_name[planned.name], w)
        scales.append(scale_b.ravel())
        offset += size
    return z, pt.concatenate(scales)


def centering_weights(logp, q0: np.ndarray, extra: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """Centering weights at the scales of the hyperparameters' Laplace-marginal mode.

    1. Climb (L-BFGS) the non-centered posterior (every weight 0) from ``q0``.
    2. There, in the model's coordinates, estimate the diagonal of the negative Hessian ``H``
       of the reparameterized scalars (:data:`HUTCHINSON_PROBES` Rademacher probes, central
       differences) and subtract the prior's share ``1 / s**2``: ``L``, the data's curvature.
    3. Climb ``log p(z) - sum(log(1 + s**2 L)) / 2`` from there: with the reparameterized
       block's conditional taken Gaussian of precision ``1 + s**2 L`` (non-centered), this is
       the Laplace approximation of the other variables' marginal density (as INLA uses),
       whose mode is where the scales sit in the posterior's bulk. The joint mode is no
       guide: in a weakly identified hierarchy it sits at a scale far above the bulk (eight
       schools: ``tau`` 29 against a posterior median near 3, which gave weights near 0.8
       and a funnel).
    4. ``w = s**2 L / (1 + s**2 L)`` with the scales ``s`` at that mode (0 where not finite),
       rounded to 1 above :data:`CENTERED_ABOVE`, else 0. A weight strictly between keeps a
       weaker funnel: the density in ``z`` grows like ``s**(-w)`` per scalar as the scale
       goes to 0 (the change of variables cancels only ``1 - w`` of the ``1 / s``), so with
       20 groups at ``w = 0.2``
       the climb to the mode ran into the neck (Student-t effects, weak data: ``tau``
       1e-30, every draw there). At 0 or 1 each scalar is either free of the scale or as
       written, where data that pin it keep the chain out of the neck.

    The correction's gradient is taken by central differences in the coordinates that are
    not reparameterized (a scale depends on those: hyperparameters). Exact for the
    normal-normal hierarchy's conditional; for other likelihoods ``L`` is the curvature at
    the first optimum.

    Parameters
    ----------
    logp : pymc_dilation.model.ModelLogp
        A compiled log density with a reparameterization.
    q0 : numpy.ndarray
        Start in the model's coordinates (raveled sampled vector).
    extra : numpy.ndarray
        The ``extra`` vector, its tail the weights (not changed).
    max_iter : int
        L-BFGS iterations at most, per climb.
    """
    from scipy.optimize import minimize

    rep = logp.reparam
    n = rep.index.size
    extra0 = np.array(extra, dtype=np.float64)
    extra0[extra0.size - n :] = 0.0
    extra1 = extra0.copy()
    extra1[extra1.size - n :] = 1.0

    def scales_at(zs):
        return rep.from_model(rep.to_model(zs, extra0)[0], extra1)[1]

    def climb(objective, z):
        with np.errstate(all="ignore"):
            found = minimize(
                objective, z, jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
            )
        return found.x if np.isfinite(found.fun) and np.all(np.isfinite(found.x)) else z

    def negative(z):
        with np.errstate(all="ignore"):
            lp, grad = logp.logp_grad(z, extra0)
        if not (np.isfinite(lp) and np.all(np.isfinite(grad))):
            return np.inf, np.zeros_like(z)
        return -lp, -grad

    z = climb(negative, rep.from_model(q0, extra0)[0][0])
    q = rep.to_model(z, extra0)[0][0]
    scales = scales_at(z)[0]
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(HUTCHINSON_PROBES, n))
    step = 1e-4 * np.where(np.isfinite(scales) & (scales > 0), scales, 1.0)
    delta = np.zeros((HUTCHINSON_PROBES, q.size))
    delta[:, rep.index] = signs * step
    with np.errstate(all="ignore"):
        _, grads = logp.logp_grad_batch(np.vstack([q + delta, q - delta]), extra1)
        change = (grads[:HUTCHINSON_PROBES] - grads[HUTCHINSON_PROBES:])[:, rep.index]
        curvature = -np.mean(signs * change / (2.0 * step), axis=0)
        data_curvature = curvature - 1.0 / scales**2
    data_curvature = np.where(np.isfinite(data_curvature), np.maximum(data_curvature, 0.0), 0.0)
    others = np.setdiff1d(np.arange(z.size), rep.index)

    def correction(zs):
        with np.errstate(all="ignore"):
            return -0.5 * np.sum(np.log1p(scales_at(zs) ** 2 * data_curvature), axis=1)

    def negative_marginal(z):
        value, grad = negative(z)
        if not np.isfinite(value):
            return value, grad
        h = 1e-5 * (1.0 + np.abs(z[others]))
        rows = np.tile(z, (2 * others.size + 1, 1))
        rows[np.arange(others.size), others] += h
        rows[others.size + np.arange(others.size), others] -= h
        values = correction(rows)
        if not np.all(np.isfinite(values)):
            return np.inf, np.zeros_like(z)
        grad = grad.copy()
        grad[others] -= (values[: others.size] - values[others.size : -1]) / (2 * h)
        return value - values[-1], grad

    if data_curvature.any() and others.size:
        z = climb(negative_marginal, z)
    ratio = scales_at(z)[0] ** 2 * data_curvature
    with np.errstate(all="ignore"):
        weights = ratio / (1.0 + ratio)
    weights[~np.isfinite(weights)] = 0.0
    return np.where(weights > CENTERED_ABOVE, 1.0, 0.0)
