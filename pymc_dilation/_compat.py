"""Every difference between PyMC 5 (ArviZ 0.x) and PyMC 6 (ArviZ 1.x, xarray.DataTree)."""

from __future__ import annotations

import pymc as pm
from pymc.model import modelcontext
from pymc.model.transform.optimization import freeze_dims_and_data

__all__ = [
    "PYMC_MAJOR",
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
