"""Every difference between PyMC 5 (ArviZ 0.x) and PyMC 6 (ArviZ 1.x, xarray.DataTree)."""

from __future__ import annotations

import pymc as pm
from pymc.model import modelcontext
from pymc.model.transform.optimization import freeze_dims_and_data

__all__ = [
    "PYMC_MAJOR",
    "population_inference_data",
    "ChainSetupMixin",
    "freeze_dims_and_data",
    "modelcontext",
]

PYMC_MAJOR = int(pm.__version__.split(".")[0])


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
