"""Every difference between PyMC 5 (ArviZ 0.x) and PyMC 6 (ArviZ 1.x, xarray.DataTree)."""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
from pymc.model import modelcontext
from pymc.model.transform.optimization import freeze_dims_and_data

__all__ = [
    "ARVIZ_MAJOR",
    "PYMC_MAJOR",
    "PYTENSOR_MAJOR",
    "numba_cacheable",
    "SUMMARY_COLUMNS",
    "overlay_posteriors",
    "summary_table",
    "population_inference_data",
    "ChainSetupMixin",
    "freeze_dims_and_data",
    "modelcontext",
]

PYMC_MAJOR = int(pm.__version__.split(".")[0])
ARVIZ_MAJOR = int(az.__version__.split(".")[0])


class ChainSetupMixin:
    """Routes PyMC's per-chain hook to ``self._start_chain(rng, tune, draws)``.

    PyMC 6 calls ``setup_chain(rng, tune, draws)`` before each chain. PyMC 5 calls only
    ``set_rng(rng)`` and never says how many tuning iterations follow, so ``tune`` and ``draws``
    arrive as ``None`` there.
    """

    def _start_chain(self, rng, tune: int | None, draws: int | None) -> None:
        raise NotImplementedError

    def setup_chain(self, rng, tune: int, draws: int) -> None:  # PyMC 6
        self._start_chain(rng, tune, draws)

    def set_rng(self, rng) -> None:  # PyMC 5
        self._start_chain(rng, None, None)


def population_inference_data(traces: list, model, sample_stats):
    """What ``pm.sample`` returns in the installed PyMC, from per-chain NDArray traces.

    ``sample_stats`` is an ``xarray.Dataset``; it becomes the ``sample_stats`` group, as
    ``pm.sample_smc`` does it.
    """
    from pymc.backends.arviz import to_inference_data
    from pymc.backends.base import MultiTrace

    idata = to_inference_data(MultiTrace(traces), model=model, log_likelihood=False)
    if PYMC_MAJOR >= 6:
        from xarray import DataTree

        tree = DataTree.from_dict(idata) if not isinstance(idata, DataTree) else idata
        tree["sample_stats"] = sample_stats
        return tree
    from arviz import InferenceData

    return InferenceData(**idata, sample_stats=sample_stats)


SUMMARY_COLUMNS = ("mean", "sd", "ess_bulk", "ess_tail", "r_hat")


def summary_table(data, var_names=None):
    """``az.summary`` of the posterior as unrounded floats, columns ``SUMMARY_COLUMNS``.

    One row per scalar element, labelled as ArviZ labels them (``"mu[0]"``). Both ArviZ 0.x and
    1.x name the columns alike, but only ``round_to="none"`` means raw numbers in both (ArviZ 0.x
    rounds when ``round_to=None``; ArviZ 1.x's default ``"auto"`` returns a rounded
    ``SummaryDataFrame``).
    """
    frame = az.summary(data, var_names=var_names, kind="all", round_to="none")
    return frame.loc[:, list(SUMMARY_COLUMNS)].astype(float)


def overlay_posteriors(data: dict, var_names=None, **kwargs):
    """Marginal posterior densities of several runs overlaid, one panel per scalar element.

    ``data`` maps a label to what ``pm.sample`` returned. ArviZ 0.x draws with
    ``az.plot_density`` (a list of runs with ``data_labels``); ArviZ 1.x with ``az.plot_dist``
    (a dict of runs, mapped to colour along a ``model`` dimension) on the matplotlib backend,
    which returns a ``PlotCollection``. ``kwargs`` go to that function. Returns the
    ``matplotlib.figure.Figure``.
    """
    if ARVIZ_MAJOR >= 1:
        kwargs.setdefault("backend", "matplotlib")
        collection = az.plot_dist(data, var_names=var_names, **kwargs)
        try:
            collection.add_legend("model")
        except (ValueError, KeyError):  # experimental in arviz_plots; the plot stands without
            pass
        return _spaced_rows(collection.get_viz("figure"))
    axes = az.plot_density(
        list(data.values()), data_labels=list(data), var_names=var_names, **kwargs
    )
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.get_figure()


try:  # PyTensor's disk cache for generated Numba functions (recent PyTensor releases)
    from pytensor.link.numba.cache import (
        CACHED_SRC_FUNCTIONS,
        NUMBA_CACHE_PATH,
        compile_numba_function_src,
    )
except ImportError:  # pragma: no cover - older PyTensor: wrappers are compiled every time
    CACHED_SRC_FUNCTIONS = None
    NUMBA_CACHE_PATH = None
    compile_numba_function_src = None


def group_dataset(data, group: str):
    """The ``xarray.Dataset`` of one group (``"posterior"``, ``"warmup_sample_stats"``, …).

    Works on ArviZ 0.x ``InferenceData`` and on the ``xarray.DataTree`` of ArviZ 1.x.
    """
    node = data[group]
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def _spaced_rows(fig, row_height: float = 2.8):
    """Give each row of panels ``row_height`` inches and lay them out without overlap.

    arviz_plots squeezes its grid into a fixed height, so two-line titles ("alpha\\n4") ran
    into the tick labels of the row above.
    """
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes if ax.has_data()}
    fig.set_layout_engine("constrained")
    fig.set_size_inches(fig.get_size_inches()[0], row_height * max(len(rows), 1))
    return fig


def _figure_of(result):
    """The matplotlib ``Figure`` behind what an ArviZ plotting function returned."""
    if hasattr(result, "get_viz"):  # ArviZ 1.x PlotCollection
        return result.get_viz("figure")
    first = result.flat[0] if hasattr(result, "flat") else result
    return first.get_figure()


def plot_trace(data, var_names=None, **kwargs):
    """Trace plot (marginal densities and traces per chain); returns the ``Figure``.

    ArviZ 0.x: ``az.plot_trace``. ArviZ 1.x: ``az.plot_trace_dist`` on the matplotlib backend.
    ``kwargs`` go to that function.
    """
    if ARVIZ_MAJOR >= 1:
        kwargs.setdefault("backend", "matplotlib")
        return _figure_of(az.plot_trace_dist(data, var_names=var_names, **kwargs))
    return _figure_of(az.plot_trace(data, var_names=var_names, **kwargs))


def plot_rank(data, var_names=None, **kwargs):
    """Rank plot of the chains (uniform ranks when the chains agree); returns the ``Figure``.

    ArviZ 0.x draws rank histograms, ArviZ 1.x rank ECDF differences with an envelope, both with
    ``az.plot_rank``; ``kwargs`` go to it.
    """
    if ARVIZ_MAJOR >= 1:
        kwargs.setdefault("backend", "matplotlib")
    return _figure_of(az.plot_rank(data, var_names=var_names, **kwargs))


def plot_ppc(data, var_names=None, num_samples: int = 50, **kwargs):
    """Posterior (or prior) predictive check of the observed data; returns the ``Figure``.

    ``data`` needs a ``posterior_predictive`` and an ``observed_data`` group. ArviZ 0.x:
    ``az.plot_ppc``; ArviZ 1.x: ``az.plot_ppc_dist`` on the matplotlib backend.
    """
    if ARVIZ_MAJOR >= 1:
        kwargs.setdefault("backend", "matplotlib")
        return _figure_of(
            az.plot_ppc_dist(data, var_names=var_names, num_samples=num_samples, **kwargs)
        )
    return _figure_of(az.plot_ppc(data, var_names=var_names, num_pp_samples=num_samples, **kwargs))


def pareto_khat(log_weights) -> float:
    """Pareto k̂ of importance log weights, by ArviZ's PSIS. NaN with too few finite weights.

    ArviZ 0.x: ``az.psislw(log_weights)``. ArviZ 1.x: ``arviz_stats``' ``psislw`` takes what
    PSIS-LOO passes it, log-likelihood values, and smooths their negation, so it is given the
    negated log weights.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    log_weights = log_weights[np.isfinite(log_weights)]
    if log_weights.size < 20:
        return float("nan")
    if ARVIZ_MAJOR >= 1:
        from arviz_stats.base import array_stats

        return float(array_stats.psislw(-log_weights)[1])
    return float(az.psislw(log_weights)[1])


PRIOR_DRAW_MODE = "NUMBA" if PYMC_MAJOR >= 6 else "FAST_RUN"
"""PyTensor mode of the compiled prior-draw function: measured per call, 0.15 ms with Numba on
PyMC 6 (1.4 ms with its default), 0.16 ms with the C backend on PyMC 5 (1.4 ms with Numba)."""


PYTENSOR_MAJOR = int(__import__("pytensor").__version__.split(".")[0])


def _digamma(x: float) -> float:
    """ψ(x): the recurrence ψ(x) = ψ(x + 1) − 1/x up to 10, then the asymptotic series to the
    ``x⁻¹⁴`` term (its remainder is below 1e-15 there), reflection below 0, NaN at the
    poles."""
    if x <= 0.0 and np.floor(x) == x:
        return np.nan
    result = 0.0
    if x < 0.0:  # ψ(x) = ψ(1 - x) - π / tan(π x)
        result = -np.pi / np.tan(np.pi * x)
        x = 1.0 - x
    while x < 10.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (
        -1.0 / 12
        + f * (1.0 / 120 + f * (-1.0 / 252 + f * (1.0 / 240 + f * (-1.0 / 132 + f * (
            691.0 / 32760 + f * (-1.0 / 12)
        )))))
    )  # fmt: skip
    return result + np.log(x) - 0.5 / x + series


if PYTENSOR_MAJOR < 3:
    from pytensor.link.numba.dispatch import basic as _numba_basic
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    from pytensor.link.numba.dispatch.scalar import scalar_op_cache_key
    from pytensor.scalar.basic import upgrade_to_float
    from pytensor.scalar.math import Psi

    class CacheablePsi(Psi):
        """Digamma with a Numba lowering that Numba can cache on disk.

        PyTensor 2's Numba lowering of ``Psi`` calls SciPy's Cython digamma through a raw
        address, which Numba cannot cache: every model whose gradient has a digamma (a
        StudentT's ``nu``, a Gamma's or Beta's shape: the derivative of ``gammaln``) compiled
        its log density afresh in each new process (stochastic volatility: 9 s of a 15 s first
        call). PyTensor 3 resolves the address at call time and needs none of this.
        """

    _NUMBA_DIGAMMA = _numba_basic.numba_njit(_digamma)

    @register_funcify_and_cache_key(CacheablePsi)
    def _lower_cacheable_psi(op, node, **kwargs):
        return _NUMBA_DIGAMMA, scalar_op_cache_key(op, implementation=1)

    _PSI = (Psi, CacheablePsi(upgrade_to_float, name="psi"))
else:
    _PSI = None


def numba_cacheable(outputs: list) -> list:
    """``outputs`` with the scalar Ops whose PyTensor Numba lowering cannot be cached on disk
    replaced by equivalent ones that can (PyTensor 2's digamma; see ``CacheablePsi``);
    unchanged on PyTensor 3."""
    if _PSI is None:
        return outputs
    from pytensor.graph.replace import graph_replace
    from pytensor.graph.traversal import applys_between
    from pytensor.tensor.elemwise import Elemwise

    psi, cacheable = _PSI
    replace = {
        node.outputs[0]: Elemwise(cacheable)(*node.inputs)
        for node in applys_between([], outputs)
        if isinstance(node.op, Elemwise) and type(node.op.scalar_op) is psi
    }
    return graph_replace(outputs, replace, strict=False) if replace else outputs
