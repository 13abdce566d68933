"""Annealed Langevin sampling along the dilation path (Chehab & Korba, 2024) for PyMC."""

from pymc_dilation.sampling import sample_dilation, sample_logdensity
from pymc_dilation.step import DilationLangevin

__all__ = ["DilationLangevin", "sample_dilation", "sample_logdensity"]
__version__ = "0.1.0"
