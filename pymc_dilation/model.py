"""A PyMC model's log density and gradient in unconstrained space, compiled for the engine.

The log density of the chosen value variables (transformed, Jacobian included) is built as a
PyTensor graph of two flat inputs: ``x``, the sampled variables raveled in order, and ``extra``,
every other free variable of the model raveled likewise (what a companion step method of a
``CompoundStep`` samples). Data and dims are frozen into constants first, so the compiled
function depends on nothing else.

The graph is compiled with PyTensor's Numba backend to ``point_fn(x, extra) -> (logp, grad)``,
callable from Numba code, which is what lets the engine run many Langevin steps, or a whole
population, in one compiled call. On a graph that the Numba backend cannot compile, the C
backend is used and the engine falls back to its vectorized Python driver.

Batched evaluation: a Numba loop over rows calling ``point_fn``, about 1 us a row on eight
schools (10 parameters), threaded over rows when there are many. A graph vectorised over a batch
dimension and compiled to C has not been compared yet.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
from numba.core.types import WrapperAddressProtocol
from numba.core.typing.typeof import typeof_impl
from numba.experimental.function_type import _get_wrapper_address
from pytensor.graph.replace import graph_replace

from pymc_dilation._compat import (
    CACHED_SRC_FUNCTIONS,
    compile_numba_function_src,
    freeze_dims_and_data,
    modelcontext,
    numba_cacheable,
)
from pymc_dilation.engine.kernels import PARALLEL_MIN_PARTICLES, POINT_SIGNATURE, PointFunction
from pymc_dilation.graph_cache import graph_key, recall, remember
from pymc_dilation.reparam import (
    Reparameterization,
    centered_coordinates,
    non_centered_values,
    plan_reparameterization,
)

__all__ = [
    "VarInfo",
    "ModelLogp",
    "PointFunctionAddress",
    "compile_model_logp",
    "data_signature",
    "continuous_value_vars",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VarInfo:
    """Name, shape and dtype of one raveled value variable."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        """Number of scalars the variable takes in a raveled vector."""
        return math.prod(self.shape)


def continuous_value_vars(model, vars: Sequence | None = None) -> list:
    """The model's value variables to sample, all continuous, resolved from user input.

    Parameters
    ----------
    model : pymc.Model
    vars : sequence, optional
        Random variables or value variables, or their names; default: every continuous free
        variable of the model.

    Raises
    ------
    ValueError
        If there is nothing continuous to sample, or a requested variable is discrete or not a
        free variable of the model.
    """
    if vars is None:
        chosen = list(model.continuous_value_vars)
        if not chosen:
            raise ValueError(
                "DilationLangevin samples continuous variables with gradients, and this model "
                "has none. Use pm.Metropolis or another step method for discrete variables."
            )
        return chosen
    if not isinstance(vars, list | tuple):
        vars = [vars]
    chosen = []
    for var in vars:
        value_var = _to_value_var(model, var)
        if value_var not in model.continuous_value_vars:
            raise ValueError(
                f"Variable {value_var.name!r} is discrete; DilationLangevin samples only "
                "continuous variables. Leave it to a step method for discrete variables "
                "(pm.Metropolis, pm.BinaryGibbsMetropolis) in a CompoundStep."
            )
        chosen.append(value_var)
    if not chosen:
        raise ValueError("vars= is empty: DilationLangevin needs at least one continuous variable.")
    return chosen


def _to_value_var(model, var):
    if isinstance(var, str):
        var = model[var]
    if var in model.value_vars:
        return var
    try:
        return model.rvs_to_values[var]
    except KeyError:
        raise ValueError(
            f"{getattr(var, 'name', var)!r} is not a free random variable of the model."
        ) from None


class ModelLogp:
    """Compiled log density and gradient of a block of a PyMC model.

    Attributes
    ----------
    var_infos : tuple of VarInfo
        The sampled variables in raveled order.
    extra_infos : tuple of VarInfo
        The other free variables (their current values enter through ``extra``).
    dim : int
        Length of the raveled sampled vector.
    point_fn : PointFunctionAddress or None
        ``logp = point_fn(x, extra, grad_out)``, the signature of
        :func:`~pymc_dilation.engine.kernels.point_function`, which compiled kernels take as an
        argument; None on the C fallback.
    cache_key : str or None
        Key of ``point_fn`` in the disk cache (see :func:`_cached_point_function`); None when it
        is not cached (C fallback, PyTensor's Numba cache off, or a graph PyTensor cannot cache).
    reparam : pymc_dilation.reparam.Reparameterization or None
        The partial non-centering of the sampled vector (see :mod:`pymc_dilation.reparam`):
        the log density is then that of the sampler's coordinates ``z``, and ``ravel``,
        ``unravel`` still speak the model's; None when no variable is reparameterized.
    """

    def __init__(self, inputs, logp, var_infos, extra_infos, backend: str = "numba", reparam=None):
        self._inputs = inputs
        self.reparam = reparam
        self._logp_graph = logp
        self._outputs_built = None
        self.var_infos = tuple(var_infos)
        self.extra_infos = tuple(extra_infos)
        self.dim = sum(info.size for info in self.var_infos)
        self.backend = backend
        self._compile()

    def _compile(self) -> None:
        self.point_fn = None
        self.cache_key = None
        if self.backend == "numba":
            # The gradient's graph follows from the log density's: the key needs only that.
            key = graph_key(self._inputs, [self._logp_graph], _key_mode())
            found = None if key is None else recall(key, self._load_point_function)
            if found is not None:
                self.point_fn, self.cache_key = found
                return
            try:
                fn = self._compile_numba()
                self.point_fn, self.cache_key = _cached_point_function(fn)
                if key is not None:
                    remember(key, (self.point_fn, self.cache_key), self.cache_key)
            except Exception as err:  # any Op without a Numba implementation
                _log.warning(
                    "The Numba backend cannot compile this model's log density (%s); "
                    "falling back to the C backend, which is slower.",
                    err,
                )
                self.point_fn = None
                self.backend = "c"
        if self.point_fn is None:
            fn = pytensor.function(
                self._inputs, self._outputs(), mode=_mode(None), on_unused_input="ignore"
            )
            fn.trust_input = True
            self._c_fn = fn

    def _outputs(self) -> list:
        """``[logp, grad]``: the gradient's graph is built when first compiled."""
        if self._outputs_built is None:
            self._outputs_built = numba_cacheable(
                [self._logp_graph, pt.grad(self._logp_graph, self._inputs[0])]
            )
        return self._outputs_built

    def _compile_numba(self):
        with pytensor.config.change_flags(numba__fastmath=FASTMATH):
            return pytensor.function(
                self._inputs, self._outputs(), mode=_mode("NUMBA"), on_unused_input="ignore"
            )

    def _load_point_function(self, cache_key: str):
        """The point wrapper stored under ``cache_key``, loaded without compiling the graph.

        Raises if it is not on disk any more (the caller then compiles). The model's own
        function, called only to surface an error (see :class:`PointFunctionAddress`), is
        compiled when first needed.
        """
        dispatcher = _compile_wrapper(_NOT_COMPILED, cache_key)
        if not sum(dispatcher.stats.cache_hits.values()):
            raise RuntimeError("the point wrapper was compiled, not loaded")
        return PointFunctionAddress(dispatcher, _LazyModelFunction(self._compile_numba)), cache_key

    def __getstate__(self):
        # Compiled functions do not pickle; the graph does, and is recompiled on arrival.
        state = self.__dict__.copy()
        state.pop("point_fn", None)
        state.pop("_c_fn", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._compile()

    def logp_grad(self, x: np.ndarray, extra: np.ndarray) -> tuple[float, np.ndarray]:
        """Log density and gradient at one raveled point ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if self.point_fn is not None:
            grad = np.empty_like(x)
            lp = self.point_fn(x, np.ascontiguousarray(extra, dtype=np.float64), grad)
        else:
            lp, grad = self._c_fn(x, extra)
        return float(lp), np.asarray(grad, dtype=np.float64)

    def logp_grad_batch(self, xs: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log densities ``(n,)`` and gradients ``(n, d)`` at the rows of ``xs``, in one call."""
        xs = np.ascontiguousarray(xs, dtype=np.float64)
        if self.point_fn is not None:
            return _evaluate_rows(self.point_fn, np.ascontiguousarray(extra, dtype=np.float64), xs)
        out = [self._c_fn(row, extra) for row in xs]  # fallback only: no Numba for this graph
        return np.array([float(lp) for lp, _ in out]), np.array([g for _, g in out])

    def batch_callable(self, extra: np.ndarray):
        """``logp_grad(xs)`` with ``extra`` bound: the engine's batched interface."""
        return lambda xs: self.logp_grad_batch(xs, extra)

    def ravel_extra(self, point: dict) -> np.ndarray:
        """The ``extra`` vector of a model point: values of the variables not sampled here,
        then the centering weights of the reparameterized scalars, if any."""
        parts = [
            np.asarray(point[info.name], dtype=np.float64).ravel() for info in self.extra_infos
        ]
        if self.reparam is not None:
            parts.append(self.reparam.weights)
        return np.concatenate(parts) if parts else np.zeros(0)

    def to_model(self, zs: np.ndarray, extra: np.ndarray) -> np.ndarray:
        """Rows (or one row) of sampler coordinates in the model's coordinates."""
        if self.reparam is None:
            return zs
        return self.reparam.to_model(zs, extra)[0].reshape(np.shape(zs))

    def from_model(self, qs: np.ndarray, extra: np.ndarray) -> np.ndarray:
        """Rows (or one row) of model coordinates in the sampler's coordinates."""
        if self.reparam is None:
            return qs
        return self.reparam.from_model(qs, extra)[0].reshape(np.shape(qs))

    def ravel(self, point: dict) -> np.ndarray:
        """The sampled variables of a model point as one raveled vector."""
        return np.concatenate(
            [np.asarray(point[info.name], dtype=np.float64).ravel() for info in self.var_infos]
        )

    def unravel(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A raveled vector back to ``{name: array}`` with the variables' shapes and dtypes."""
        out, start = {}, 0
        for info in self.var_infos:
            out[info.name] = x[start : start + info.size].reshape(info.shape).astype(info.dtype)
            start += info.size
        return out


_POINT_WRAPPER_SRC = """
def point_fn(y, extra, grad_out):
    try:
        lp, grad = logp_fn(y, extra)
    except Exception:
        grad_out[:] = np.nan
        return np.nan
    grad_out[:] = grad
    return np.asarray(lp).ravel()[0]
"""
"""Source of the point wrapper. An error raised in the model's compiled graph (a failed Cholesky
factorisation, say) makes the point's log density NaN, which the kernels reject as a divergence:
the kernels call the wrapper through its C address (see :class:`PointFunctionAddress`), where an
exception could not propagate and would leave the log density undefined."""


class PointFunctionAddress(WrapperAddressProtocol):
    """A compiled point function that Numba kernels receive as a bare function pointer.

    Passing a Numba dispatcher to a compiled kernel as a first-class function makes Numba type it
    and look up two addresses through LLVM on every call: about 40-60 us, more than sixteen
    gradients of a small model (measured with cProfile on eight schools: 0.86 s of a 2.8 s
    ``pm.sample`` call with 4000 iterations). This object gives Numba the address of the
    wrapper's C entry point, looked up once, and a type built once, so a kernel call costs what
    its arrays cost. Calls go through that C entry point, which is why the wrapper turns errors
    into a NaN log density (:data:`_POINT_WRAPPER_SRC`).

    Called from Python, it calls the dispatcher; if the log density is not finite there, the
    model's own compiled function is called too, so that an error it raises reaches the caller.

    Parameters
    ----------
    dispatcher : numba.core.registry.CPUDispatcher
        The wrapper compiled for :data:`~pymc_dilation.engine.kernels.POINT_SIGNATURE`.
    logp_fn : callable, optional
        The model's compiled ``(y, extra) -> (logp, grad)``, called to surface an error.
    """

    def __init__(self, dispatcher, logp_fn=None):
        self.dispatcher = dispatcher
        self._logp_fn = logp_fn
        self._address = _get_wrapper_address(dispatcher, POINT_SIGNATURE)

    def __wrapper_address__(self) -> int:
        return self._address

    def signature(self):
        return POINT_SIGNATURE

    def __call__(self, y: np.ndarray, extra: np.ndarray, grad_out: np.ndarray) -> float:
        lp = self.dispatcher(y, extra, grad_out)
        if not np.isfinite(lp) and self._logp_fn is not None:
            self._logp_fn(y, extra)  # raises the model's error, if it has one
        return lp


class _LazyModelFunction:
    """The model's compiled ``(y, extra) -> (logp, grad)``, compiled at the first call."""

    def __init__(self, compile_fn):
        self._compile_fn = compile_fn
        self._fn = None

    def __call__(self, y: np.ndarray, extra: np.ndarray):
        if self._fn is None:
            self._fn = self._compile_fn().vm.jit_fn
        return self._fn(y, extra)


_NOT_COMPILED = object()
"""Stands for the model's function in the environment of a point wrapper that is loaded from
the disk cache: Numba loads the compiled wrapper (which holds the model's code) without typing
its globals, and a cache miss fails to type this object instead of compiling a wrong function."""


FASTMATH = False
"""Whether the model's Numba code may reorder floating-point operations (PyTensor's default is
True). Off, so that a seed gives the same draws whatever the cache holds: with it on, the log
density compiled afresh and the same function loaded from the disk cache differed in the last
bits (a 2-component mixture on PyTensor 3.3: relative 9e-16 at 75 % of points), and HMC
trajectories amplify that into other draws. Measured cost: -35 % to +50 % per evaluation
(2-3 us on radon and a 100-group hierarchy, where a draw costs hundreds)."""


def _key_mode() -> str:
    """How the log density is compiled, for :func:`~pymc_dilation.graph_cache.graph_key`: the
    point wrapper's source and signature are part of it, so a changed wrapper is never loaded
    stale."""
    wrapper = hashlib.sha256(f"{_POINT_WRAPPER_SRC} {POINT_SIGNATURE}".encode()).hexdigest()
    return (
        f"NUMBA with parameter checks as -inf, logp and its gradient, fastmath {FASTMATH}, "
        f"wrapper {wrapper}"
    )


@typeof_impl.register(PointFunctionAddress)
def _typeof_point_function_address(val, c):
    return PointFunction  # built once: FunctionType(POINT_SIGNATURE) per call costs ~10 us


def _pytensor_cache_key(fn) -> str | None:
    """PyTensor's own disk-cache key of a compiled Numba function, or None if it has none.

    PyTensor's Numba linker keys the function of a whole graph by the cache keys of its Ops (their
    props), the graph's wiring (each input as a position in the toposort) and a digest of every
    constant's value and dtype; it registers the compiled source under that key for its cache
    locator. No variable name enters it, so a graph rebuilt in another process (where
    auto-generated names such as those of fused ``Composite`` outputs differ) gets the same key,
    and any change of an Op, of the wiring or of a constant gives another. A graph with an Op that
    PyTensor cannot cache has no key (None).
    """
    if CACHED_SRC_FUNCTIONS is None:
        return None
    py_func = getattr(fn.vm.jit_fn, "py_func", None)
    return None if py_func is None else CACHED_SRC_FUNCTIONS.get(py_func)


def _wrapper_cache_key(graph_key: str) -> str:
    """The point wrapper's cache key: PyTensor's graph key, the wrapper source and versions."""
    digest = hashlib.sha256((f"v4 fastmath {FASTMATH}" + _POINT_WRAPPER_SRC).encode())
    digest.update(f"{pytensor.__version__} {numba.__version__} {graph_key}".encode())
    return "pymc_dilation_point_" + digest.hexdigest()


def _cached_point_function(fn) -> tuple[PointFunctionAddress, str | None]:
    """The point wrapper of a PyTensor Numba function, compiled or loaded from the disk cache.

    Returns the wrapper as a :class:`PointFunctionAddress` and its cache key (None when it is
    not cached).

    The wrapper is compiled together with the model's whole graph, which costs about a second
    of LLVM time or more in a fresh process. It is cached on disk through PyTensor's cache
    locator under :func:`_wrapper_cache_key`, derived from the key PyTensor gives the graph
    itself (:func:`_pytensor_cache_key`), so a model compiled before loads in milliseconds and a
    changed graph or constant never reuses a stale function. A graph that PyTensor does not
    cache is not cached here either: its wrapper is compiled afresh.

    An earlier key digested ``debugprint`` of the graph, which names variables with a
    process-wide counter (``'t18'`` in one process, ``'t12'`` in the next), so graphs with fused
    elementwise Ops (sign_regression, kidiq) missed the cache on every call.
    """
    jit_fn = fn.vm.jit_fn
    graph_key = _pytensor_cache_key(fn) if pytensor.config.numba__cache else None
    key = None if graph_key is None else _wrapper_cache_key(graph_key)
    if key is not None:
        try:
            return PointFunctionAddress(_compile_wrapper(jit_fn, key), jit_fn), key
        except Exception as err:  # an unreadable cache entry must not cost the Numba backend
            _log.debug("Cached point function unavailable (%s); compiling it afresh.", err)
    return PointFunctionAddress(_compile_wrapper(jit_fn, None), jit_fn), None


def _compile_wrapper(jit_fn, key: str | None):
    """The wrapper of ``jit_fn``, disk-cached under ``key`` unless ``key`` is None."""
    env = {"logp_fn": jit_fn, "np": np, "__name__": __name__}
    if key is None or compile_numba_function_src is None:
        local_env: dict = {}
        exec(compile(_POINT_WRAPPER_SRC, "<point wrapper>", "exec"), env, local_env)
        return numba.njit(POINT_SIGNATURE, fastmath=FASTMATH)(local_env["point_fn"])
    source = compile_numba_function_src(_POINT_WRAPPER_SRC, "point_fn", env, cache_key=key)
    return numba.njit(POINT_SIGNATURE, cache=True, fastmath=FASTMATH)(source)


_F8 = numba.types.float64


def _mode(name: str | None):
    """PyTensor mode ``name`` with parameter checks turned into a log density of ``-inf``.

    By default a model raises (``ParameterValueError``) where a parameter leaves its domain, a
    GARCH variance below zero for instance; a Langevin proposal or an importance draw may land
    there, and it must be a rejected point, not an error (``pm.sample`` compiles the same way).
    """
    return pytensor.compile.mode.get_mode(name).including("local_check_parameter_to_ninf_switch")


def _evaluate_rows_py(point_fn, extra, xs):
    n = xs.shape[0]
    lps = np.empty(n)
    grads = np.empty_like(xs)
    for i in numba.prange(n):
        lps[i] = point_fn(xs[i], extra, grads[i])
    return lps, grads


_ROWS_SIGNATURE = numba.types.Tuple((_F8[::1], _F8[:, ::1]))(PointFunction, _F8[::1], _F8[:, ::1])
_evaluate_rows_serial = numba.njit(_ROWS_SIGNATURE, cache=True)(_evaluate_rows_py)
_evaluate_rows_parallel = numba.njit(_ROWS_SIGNATURE, cache=True, parallel=True)(_evaluate_rows_py)


def _evaluate_rows(point_fn, extra, xs):
    """Every row of ``xs`` in one compiled call, on all cores when there are many rows."""
    many = xs.shape[0] >= PARALLEL_MIN_PARTICLES
    return (_evaluate_rows_parallel if many else _evaluate_rows_serial)(point_fn, extra, xs)


def _frozen(model):
    """``freeze_dims_and_data(model)``, also for models with user-set initial values.

    PyMC refuses to convert such models; the initial values play no part in the log density, so
    they are set aside while the frozen copy is made (shapes come from the default initial point).
    """
    initvals = model.rvs_to_initial_values
    saved = dict(initvals)
    try:
        for rv in initvals:
            initvals[rv] = None
        return freeze_dims_and_data(model)
    finally:
        initvals.update(saved)


def data_signature(model) -> tuple:
    """What a compiled log density of ``model`` took from its data: every data variable's
    name, shape, dtype and a digest of its values, and every dimension's length.

    :func:`compile_model_logp` freezes the data into constants, so a compiled log density is
    stale once ``pm.set_data`` changes any of these.
    """
    items = []
    for var in model.data_vars:
        value = np.ascontiguousarray(var.get_value(borrow=True))
        digest = hashlib.blake2b(value.view(np.uint8).ravel(), digest_size=16).hexdigest()
        items.append((var.name, value.shape, str(value.dtype), digest))
    lengths = tuple(sorted((name, np.shape(values)) for name, values in model.coords.items()))
    return tuple(items), lengths


def compile_model_logp(
    model=None, vars: Sequence | None = None, backend: str = "numba", reparameterize: bool = True
):
    """Compile the log density of ``vars`` of ``model`` in unconstrained space.

    Parameters
    ----------
    model : pymc.Model, optional
        Defaults to the model in context.
    vars : sequence, optional
        Variables to sample (default: all continuous free variables).
    backend : {"numba", "c"}
        Prefer PyTensor's Numba backend (fast path) or force the C backend.
    reparameterize : bool
        Sample location-scale variables whose scale is a sampled variable (centered
        hierarchies: funnels) in partially non-centered coordinates
        (:mod:`pymc_dilation.reparam`); their weights start at 1 (the model as written) until
        :func:`~pymc_dilation.reparam.centering_weights` chooses them.

    Returns
    -------
    ModelLogp
    """
    if backend not in ("numba", "c"):
        raise ValueError(f"backend must be 'numba' or 'c', got {backend!r}.")
    model = modelcontext(model)
    value_vars = continuous_value_vars(model, vars)
    names = [v.name for v in value_vars]
    frozen = _frozen(model)
    frozen_values = {v.name: v for v in frozen.value_vars}
    shapes = {n: v.type.shape for n, v in frozen_values.items()}
    if any(None in shape for shape in shapes.values()):
        # Frozen dims and data make most shapes static; where one is not (a random walk whose
        # length PyTensor cannot infer) the initial point gives it. Compiling that function
        # took 0.02-0.04 s of this call's 0.1-0.23 s in a fresh process (eight schools,
        # radon) where the shapes were known.
        initial_point = frozen.initial_point()
        shapes = {n: np.shape(initial_point[n]) for n in frozen_values}

    def infos(names_):
        return [
            VarInfo(n, tuple(int(k) for k in shapes[n]), str(frozen_values[n].dtype))
            for n in names_
        ]

    var_infos = infos(names)
    extra_names = [v.name for v in frozen.value_vars if v.name not in names]
    extra_infos = infos(extra_names)

    x = pt.vector("x", dtype="float64")
    extra = pt.vector("extra", dtype="float64")
    replacements = {}
    for flat, group in ((x, var_infos), (extra, extra_infos)):
        start = 0
        for info in group:
            piece = flat[start : start + info.size].reshape(info.shape)
            replacements[frozen_values[info.name]] = piece.astype(info.dtype)
            start += info.size
    plan = (
        plan_reparameterization(
            frozen,
            {info.name: info.shape for info in var_infos},
            [model.rvs_to_values[rv].name for rv in model.free_RVs],
        )
        if reparameterize
        else []
    )
    if not plan:
        logp = graph_replace(frozen.logp(), replacements, strict=False)
        return ModelLogp([x, extra], logp, var_infos, extra_infos, backend)
    weights = extra[sum(info.size for info in extra_infos) :]
    values, log_jacobian = non_centered_values(frozen, replacements, plan, weights)
    logp = graph_replace(frozen.logp(), values, strict=False) + log_jacobian
    reparam = _reparameterization(
        [x, extra], frozen_values, var_infos, plan, replacements, values, log_jacobian, weights
    )
    return ModelLogp([x, extra], logp, var_infos, extra_infos, backend, reparam)


def _reparameterization(
    inputs, frozen_values, var_infos, plan, pieces, values, log_jacobian, weights
):
    """The :class:`~pymc_dilation.reparam.Reparameterization` of ``plan``: which scalars, and
    the graphs of the maps between coordinates (inputs bound by the caller)."""
    planned = {p.name for p in plan}
    offsets = np.cumsum([0] + [info.size for info in var_infos])
    index = np.concatenate(
        [
            np.arange(offsets[i], offsets[i + 1])
            for i, info in enumerate(var_infos)
            if info.name in planned
        ]
    )
    z, scales = centered_coordinates(pieces, plan, weights)
    to_model = pt.concatenate(
        [pt.cast(values[frozen_values[info.name]], "float64").ravel() for info in var_infos]
    )
    from_model = pt.concatenate(
        [
            z[info.name].ravel() if info.name in z else pieces[frozen_values[info.name]].ravel()
            for info in var_infos
        ]
    )
    return Reparameterization(
        [p.name for p in plan],
        [int(np.prod(p.shape)) for p in plan],
        index,
        inputs,
        [to_model, log_jacobian],
        [from_model, scales],
    )


_PRIOR_DRAWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""A model's compiled prior draw, with the variables it was compiled for (see
:func:`prior_sampler`)."""

UNDRAWABLE_OPS = frozenset({"FlatRV", "HalfFlatRV"})
"""PyMC's random variables whose draw raises (improper priors)."""


def _undrawable(rv) -> bool:
    """Whether PyMC cannot draw ``rv``: an improper prior, or a ``pm.CustomDist`` given no
    ``random`` (its draw is PyMC's ``default_not_implemented``)."""
    op = rv.owner.op
    if type(op).__name__ in UNDRAWABLE_OPS:
        return True
    random = getattr(op, "_random_fn", None)  # a CustomDist's random
    return getattr(random, "__qualname__", "").startswith("default_not_implemented")


def prior_sampler(model, var_infos: Sequence[VarInfo]):
    """``draw(n, seed) -> (n, d)``: prior draws of the value variables, raveled, unconstrained.

    Returns None when PyMC cannot draw the model's prior (``pm.Flat``, ``pm.HalfFlat``, custom
    densities without a random method). User initial values are ignored: every free variable
    is drawn. All ``n`` draws come from one compiled call (see :func:`_batched_prior_draw`);
    where PyTensor cannot vectorize the prior's graph, from one call per draw (a Python loop,
    0.15-0.4 ms a draw), so callers draw hundreds, not millions.
    """
    if any(_undrawable(rv) for rv in model.free_RVs):
        # Known before compiling: Numba compiled a Flat prior's draw in object mode, 0.3 s
        # of every 0.8 s pm.sample call on the kidiq regression, only for the draw to fail.
        return None
    from pymc.initial_point import make_initial_point_expression
    from pymc.pytensorf import compile, find_rng_nodes, replace_rng_nodes, reseed_rngs

    from pymc_dilation._compat import PRIOR_DRAW_MODE

    names = [model.rvs_to_values[rv].name for rv in model.free_RVs]
    # The same model's draw function again (a second pm.sample call builds a new step method;
    # compiling it was 0.02-0.035 s of each call). The variables' identities tell a model
    # changed since; data enter as shared variables, read at every call.
    signature = tuple(
        (id(rv), id(model.rvs_to_values[rv]), id(model.rvs_to_transforms.get(rv)))
        for rv in model.free_RVs
    )
    cached = _PRIOR_DRAWS.get(model)
    if cached is not None and cached[0] == signature:
        fn, rngs, batched = cached[1:]
    else:
        expressions = make_initial_point_expression(
            free_rvs=model.free_RVs,
            rvs_to_transforms=model.rvs_to_transforms,
            initval_strategies={},
            jitter_rvs=set(),
            default_strategy="prior",
            return_transformed=True,
        )
        try:
            fn, batched = _batched_prior_draw(expressions, PRIOR_DRAW_MODE), True
        except Exception:  # noqa: BLE001 - a graph PyTensor cannot vectorize: one call a draw
            fn, batched = None, False
        try:  # a variable PyMC cannot draw raises NotImplementedError
            if fn is None:
                with warnings.catch_warnings():  # Numba's object-mode notice for what fails
                    warnings.simplefilter("ignore", UserWarning)
                    fn = compile([], replace_rng_nodes(expressions), mode=PRIOR_DRAW_MODE)
                fn.trust_input = True
                fn()
            rngs = find_rng_nodes(fn.maker.fgraph.outputs)
        except NotImplementedError:
            return None
        _PRIOR_DRAWS[model] = (signature, fn, rngs, batched)
    order = [names.index(info.name) for info in var_infos]

    def draw(n: int, seed) -> np.ndarray:
        reseed_rngs(rngs, seed)
        if batched:
            values = fn(np.asarray(n, dtype="int64"))
            columns = [np.asarray(values[i], dtype=float).reshape(n, -1) for i in order]
            return np.concatenate(columns, axis=1)
        rows = []
        for _ in range(n):
            values = fn()
            rows.append(np.concatenate([np.ravel(values[i]) for i in order]))
        return np.asarray(rows, dtype=float).reshape(n, -1)

    return draw


def _batched_prior_draw(expressions, mode):
    """A compiled ``f(n)`` that draws ``n`` independent copies of ``expressions`` (the prior's
    initial-point expressions) in one call: every random variable with no random ancestor is
    drawn ``n`` times (``change_dist_size``) and the graph below it vectorized over that
    batch. One call a draw took 0.15-0.37 ms (0.15 s of every step method built for a
    300-group hierarchy, 512 draws); batched, 512 draws take 1.5 ms. Raises where PyTensor
    cannot vectorize the graph (a random variable of fixed size under a batched parameter,
    as stochastic volatility's), or where the draw's shapes are not the batch's."""
    import pytensor.tensor as pt
    from pymc.distributions.distribution import SymbolicRandomVariable
    from pymc.distributions.shape_utils import change_dist_size
    from pymc.pytensorf import compile, replace_rng_nodes
    from pytensor.graph.replace import vectorize_graph
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.random.op import RandomVariable

    def is_draw(var) -> bool:
        owner = var.owner
        return (
            owner is not None
            and isinstance(owner.op, RandomVariable | SymbolicRandomVariable)
            and var is owner.outputs[owner.op.default_output]
        )

    draws = [var for var in ancestors(expressions) if is_draw(var)]
    roots = [
        var
        for var in draws
        if not any(a is not var and is_draw(a) for a in ancestors(var.owner.inputs))
    ]
    n = pt.lscalar("n")
    batched = vectorize_graph(
        expressions, replace={var: change_dist_size(var, [n], expand=True) for var in roots}
    )
    with warnings.catch_warnings():  # Numba's object-mode notice
        warnings.simplefilter("ignore", UserWarning)
        fn = compile([n], replace_rng_nodes(batched), mode=mode)
    fn.trust_input = True
    one, three = fn(np.asarray(1, dtype="int64")), fn(np.asarray(3, dtype="int64"))
    for a, b, expression in zip(one, three, expressions, strict=True):
        static = expression.type.shape
        if (
            np.shape(a)[:1] != (1,)
            or np.shape(b) != (3, *np.shape(a)[1:])
            or len(static) != np.ndim(a) - 1
            or any(s is not None and s != t for s, t in zip(static, np.shape(a)[1:]))
        ):
            raise ValueError(f"a batched prior draw of {expression} has the wrong shape")
    return fn
