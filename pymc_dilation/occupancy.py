"""Which modes each ``DilationLangevin`` chain visited, as a table, a picture and a check.

``pm.sample(step=DilationLangevin())`` records for every draw the mode of its chain's map it
lies in (``mode_index``), the number of modes in that map (``n_modes``), the mode's estimated
weight (``mode_weight``) and the outcome of the iteration's jump (``jump_acceptance``). Modes
are numbered by their location, so chains that found the same modes number them alike.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from pymc_dilation.diagnostics import UnreliableResultWarning

__all__ = ["mode_occupancy", "plot_mode_occupancy", "check_mode_maps"]

_STATS = ("mode_index", "n_modes", "mode_weight", "jump_acceptance")


def _step_stats(idata) -> dict[str, np.ndarray]:
    """``(chain, draw)`` arrays of the step method's mode statistics, or a ``ValueError``."""
    try:
        stats = idata["sample_stats"] if not hasattr(idata, "sample_stats") else idata.sample_stats
    except (KeyError, TypeError):
        stats = None
    if stats is None or any(name not in stats for name in _STATS):
        raise ValueError(
            "idata must be what pm.sample(step=DilationLangevin()) returned: its sample_stats "
            f"need {', '.join(_STATS)} (for sample_dilation results, use mode_table)."
        )
    if "draw" in stats.dims and "stage" in stats.dims:
        raise ValueError("this is a sample_dilation result: use pymc_dilation.mode_table.")
    return {name: np.asarray(stats[name]) for name in _STATS}


def mode_occupancy(idata) -> pd.DataFrame:
    """One row per chain and mode of its map: the share of draws in it and its estimated weight.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample(step=DilationLangevin())`` returned.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(chain, mode)``; columns ``share`` (the chain's draws in the mode: what
        the posterior estimate uses), ``weight`` (the tuning population's importance estimate
        of the mode's weight), ``draws`` and ``jump_acceptance`` (the chain's mean, over the
        iterations that proposed a jump). A mode of the map that the chain never visited has
        share 0 and the weight of the ``mode_weight`` statistic is unknown (NaN) for it.
    """
    stats = _step_stats(idata)
    rows = []
    for chain, (index, n_modes, weight, jump) in enumerate(zip(*(stats[name] for name in _STATS))):
        n = len(index)
        jumps = jump[np.isfinite(jump)]
        for mode in range(int(n_modes.max())):
            here = index == mode
            rows.append(
                {
                    "chain": chain,
                    "mode": mode,
                    "share": here.sum() / n,
                    "weight": float(weight[here][0]) if here.any() else np.nan,
                    "draws": int(here.sum()),
                    "jump_acceptance": float(jumps.mean()) if len(jumps) else np.nan,
                }
            )
    return pd.DataFrame(rows).set_index(["chain", "mode"])


def check_mode_maps(idata, tolerance: float = 0.15) -> list[str]:
    """Warn when the chains' mode maps or their draws' shares of the modes disagree.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample(step=DilationLangevin())`` returned.
    tolerance : float
        Largest difference between one chain's share of a mode and the pooled share not
        reported.

    Returns
    -------
    list of str
        The problems found (empty when none); each is also raised as an
        :class:`~pymc_dilation.diagnostics.UnreliableResultWarning`.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1); got {tolerance!r}.")
    stats = _step_stats(idata)
    found = stats["n_modes"].max(axis=1)
    problems = []
    if len(set(found.tolist())) > 1:
        problems.append(
            "The chains' mode maps disagree: "
            + ", ".join(f"chain {c} found {k}" for c, k in enumerate(found))
            + " modes. A mode missed by some chains may be missed by all: increase "
            "DilationLangevin(particles=...) and compare with pymc_dilation.sample_dilation."
        )
    else:
        index = stats["mode_index"]
        shares = np.stack([(index == k).mean(axis=1) for k in range(int(found[0]))], axis=1)
        gap = np.abs(shares - shares.mean(axis=0)).max()
        if gap > tolerance:
            problems.append(
                f"A chain's share of a mode differs from the pooled share by {gap:.2f}: the "
                "chains have not mixed between the modes. Increase tune and draws, or see "
                "pymc_dilation.mode_occupancy."
            )
    for problem in problems:
        warnings.warn(problem, UnreliableResultWarning, stacklevel=2)
    return problems


def plot_mode_occupancy(idata, axes=None):
    """Each chain's mode over the draws (left) and its share of each mode (right).

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample(step=DilationLangevin())`` returned.
    axes : sequence of two matplotlib Axes, optional
        Where to draw; default: a new figure.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes
        The two panels.
    """
    import matplotlib.pyplot as plt

    stats = _step_stats(idata)
    index = stats["mode_index"]
    n_chains, n_draws = index.shape
    if axes is None:
        _, axes = plt.subplots(
            1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 1]}, layout="constrained"
        )
    trace, bars = axes
    offsets = np.linspace(-0.25, 0.25, n_chains) if n_chains > 1 else np.zeros(1)
    for chain in range(n_chains):
        trace.plot(
            np.arange(n_draws), index[chain] + offsets[chain], ".", ms=2, label=f"chain {chain}"
        )
    n_modes = int(stats["n_modes"].max())
    trace.set_yticks(range(n_modes))
    trace.set_xlabel("draw")
    trace.set_ylabel("mode")
    trace.set_title("Mode of each draw, by chain")
    width = 0.8 / n_chains
    for chain in range(n_chains):
        shares = np.bincount(index[chain], minlength=n_modes) / n_draws
        bars.barh(np.arange(n_modes) + (chain - (n_chains - 1) / 2) * width, shares, width)
    bars.set_yticks(range(n_modes))
    bars.set_xlabel("share of draws")
    bars.set_title("Occupancy")
    trace.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        ncol=min(n_chains, 4),  # wider legends squeeze the panels
        fontsize="small",
        markerscale=3,
    )
    return np.asarray(axes)
