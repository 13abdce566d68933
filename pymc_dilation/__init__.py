"""Annealed Langevin sampling along the dilation path (Chehab & Korba, 2024) for PyMC."""

from pymc_dilation.compare import ComparisonResult, compare_with_nuts
from pymc_dilation.mode_map import mode_table, plot_modes
from pymc_dilation.occupancy import check_mode_maps, mode_occupancy, plot_mode_occupancy
from pymc_dilation.sampling import sample_dilation, sample_logdensity
from pymc_dilation.step import DilationLangevin

__all__ = [
    "ComparisonResult",
    "DilationLangevin",
    "check_mode_maps",
    "compare_with_nuts",
    "mode_occupancy",
    "mode_table",
    "plot_mode_occupancy",
    "plot_modes",
    "sample_dilation",
    "sample_logdensity",
]
__version__ = "0.1.0"
