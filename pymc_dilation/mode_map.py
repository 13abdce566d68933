"""The mode map of a population result, as a table and as a picture.

:func:`~pymc_dilation.sample_dilation` stores, per chain and mode, the estimated weight and its
standard error, the particles in the mode, the log density at its peak and its location and local
covariance (unconstrained space), and for every particle the index of its mode. These functions
read them from what ``sample_dilation`` returned, on PyMC 5 (InferenceData) as on PyMC 6
(DataTree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pymc_dilation._compat import group_dataset
from pymc_dilation.validation import check_positive_int

__all__ = ["mode_table", "plot_modes"]

_MODE_STATS = ("mode_weight", "mode_weight_se", "mode_particles", "mode_logp", "mode_location")


_WHAT = (
    "what sample_dilation returned (arviz.InferenceData or xarray.DataTree) or a "
    "sample_logdensity result"
)


def _stats(data, owner: str):
    if hasattr(data, "stage_stats"):  # a sample_logdensity result
        stats = data.stage_stats
    else:
        try:
            stats = group_dataset(data, "sample_stats")
        except (KeyError, TypeError, AttributeError, IndexError):
            raise ValueError(
                f"{owner} reads {_WHAT}; got {type(data).__name__}"
                + (" without a sample_stats group." if hasattr(data, "__getitem__") else ".")
            ) from None
    missing = [name for name in _MODE_STATS if name not in stats]
    if missing:
        raise ValueError(
            f"{owner} reads the mode map of sample_dilation or sample_logdensity "
            f"results; this result has no {', '.join(missing)} in sample_stats."
        )
    return stats


def _check_chain(chain, stats) -> int:
    n_chains = stats.sizes["chain"]
    if (
        isinstance(chain, bool | np.bool_)
        or not isinstance(chain, int | np.integer)
        or not 0 <= chain < n_chains
    ):
        raise ValueError(f"chain must be an integer in 0..{n_chains - 1}; got {chain!r}.")
    return int(chain)


def _posterior(data, chain: int):
    """``{name: (draws, ...) array}`` of one chain: the posterior, or a sample_logdensity
    result's samples as ``x[i]``."""
    if hasattr(data, "chain_samples"):
        samples = data.chain_samples[chain]
        return {f"x[{i}]": samples[:, i] for i in range(samples.shape[1])}
    posterior = group_dataset(data, "posterior")
    return {name: np.asarray(posterior[name][chain]) for name in posterior.data_vars}


LOCATION_COLUMNS = 8
"""Location columns :func:`mode_table` shows by default."""


def mode_table(
    data, chain: int | None = None, location_columns: int | None = LOCATION_COLUMNS
) -> pd.DataFrame:
    """One row per mode found: weight, its Monte Carlo error, particles, peak and location.

    Parameters
    ----------
    data : arviz.InferenceData, xarray.DataTree or LogDensityResult
        What :func:`~pymc_dilation.sample_dilation` or
        :func:`~pymc_dilation.sample_logdensity` returned.
    chain : int, optional
        One chain; default: all, indexed by ``(chain, mode)``.
    location_columns : int or None
        Location columns at most: those along which the modes' peaks differ most (the first
        parameters when they do not differ), so that a model with hundreds of parameters gives
        a readable table. ``None`` shows every parameter.

    Returns
    -------
    pandas.DataFrame
        Columns ``weight`` and ``weight_se`` (importance-sampling estimate of the mode's
        posterior mass and its standard error), ``particles`` and ``share`` (the final
        particles in the mode), ``log_density`` (at the mode's peak, unconstrained space), and
        one column per unconstrained parameter (up to ``location_columns``) with the peak's
        location. Modes are sorted by weight within each chain.
    """
    if location_columns is not None:
        location_columns = check_positive_int("location_columns", location_columns)
    stats = _stats(data, "mode_table")
    chains = range(stats.sizes["chain"]) if chain is None else [_check_chain(chain, stats)]
    params = [str(p) for p in np.asarray(stats["param"])]
    n = stats.sizes["draw"]
    frames = []
    for c in chains:
        weights = np.asarray(stats["mode_weight"][c])
        found = np.flatnonzero(np.isfinite(weights))
        particles = np.asarray(stats["mode_particles"][c])[found]
        frame = pd.DataFrame(
            {
                "weight": weights[found],
                "weight_se": np.asarray(stats["mode_weight_se"][c])[found],
                "particles": particles.astype(int),
                "share": particles / n,
                "log_density": np.asarray(stats["mode_logp"][c])[found],
            },
            index=pd.MultiIndex.from_product([[c], found], names=["chain", "mode"]),
        )
        location = pd.DataFrame(
            np.asarray(stats["mode_location"][c])[found], index=frame.index, columns=params
        )
        frames.append(pd.concat([frame, location], axis=1).sort_values("weight", ascending=False))
    table = pd.concat(frames)
    if location_columns is None or len(params) <= location_columns:
        return table
    spread = table[params].std(axis=0, ddof=0).fillna(0.0).to_numpy()
    keep = np.sort(np.argsort(-spread, kind="stable")[:location_columns])
    return table[[*table.columns[: -len(params)], *(params[i] for i in keep)]]


TITLE_CHARS = 32
"""Characters of a panel title on one line (a 4.2-inch panel); longer titles are wrapped and
set smaller, so that none is cut."""


def _fit_title(title: str) -> str:
    """``title`` wrapped into lines of at most :data:`TITLE_CHARS` characters."""
    import textwrap

    if len(title) <= TITLE_CHARS:
        return title
    lines = textwrap.wrap(title.replace(",", ", "), TITLE_CHARS, break_long_words=True)
    return "\n".join(line.replace(", ", ",") for line in lines)


def plot_modes(
    data,
    var_names: str | Sequence[str] | None = None,
    chain: int = 0,
    max_modes: int = 6,
    max_panels: int = 12,
    bins: int = 40,
):
    """The marginal posteriors, each stacked by mode: which mode puts mass where.

    One panel per scalar element of the chosen posterior variables (constrained space, as in
    ``posterior``), its histogram split by the mode of each particle; the ``max_modes``
    heaviest modes get a colour each (labelled with their estimated weight), the rest share a
    grey one.

    Parameters
    ----------
    data : arviz.InferenceData, xarray.DataTree or LogDensityResult
        What :func:`~pymc_dilation.sample_dilation` or
        :func:`~pymc_dilation.sample_logdensity` returned.
    var_names : str or list of str, optional
        Posterior variables (``"x[0]"``, ``"x[1]"``, … for a ``sample_logdensity`` result);
        default: all.
    chain : int
        Which chain's particles and mode map.
    max_modes, max_panels, bins : int
        Modes with their own colour, panels at most, histogram bins.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from pymc_dilation.validation import check_names, check_positive_int

    stats = _stats(data, "plot_modes")
    chain = _check_chain(chain, stats)
    max_modes = check_positive_int("max_modes", max_modes)
    max_panels = check_positive_int("max_panels", max_panels)
    bins = check_positive_int("bins", bins)
    posterior = _posterior(data, chain)
    names = (
        list(posterior)
        if var_names is None
        else check_names("var_names", var_names, list(posterior))
    )
    labels = np.asarray(stats["mode_index"][chain])
    weights = np.asarray(stats["mode_weight"][chain])
    order = [k for k in np.argsort(-np.nan_to_num(weights, nan=-1.0)) if np.isfinite(weights[k])]
    shown = order[:max_modes]
    panels = []
    for name in names:
        values = posterior[name]
        flat = values.reshape(values.shape[0], -1)
        for j in range(flat.shape[1]):
            index = np.unravel_index(j, values.shape[1:]) if values.ndim > 1 else ()
            title = f"{name}[{','.join(map(str, index))}]" if index else name
            panels.append((title, flat[:, j]))
    panels = panels[:max_panels]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    n_entries = len(shown) + int(np.any(~np.isin(labels, shown)))
    ncol = min(n_entries, 2 * cols)
    legend_rows = -(-n_entries // ncol)
    legend_height = 0.3 * legend_rows + 0.2
    height = 2.8 * rows + 0.5 + legend_height
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(4.2 * cols, 2.2 * ncol), height), squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, values) in zip(axes.flat, panels):
        groups = [values[labels == k] for k in shown]
        names_ = [f"mode {k}: {weights[k]:.3f}" for k in shown]
        rest = values[~np.isin(labels, shown)]
        if rest.size:
            groups.append(rest)
            names_.append("other modes")
        ax.hist(
            groups, bins=bins, stacked=True, label=names_,
            color=[colors[i % len(colors)] for i in range(len(shown))] + ["0.6"] * bool(rest.size),
        )  # fmt: skip
        ax.set_title(_fit_title(title), fontsize="medium" if len(title) <= TITLE_CHARS else "small")
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, legend_labels, loc="lower center", ncol=ncol, fontsize="small",
        title="mode: estimated weight", title_fontsize="small", frameon=False,
    )  # fmt: skip
    fig.suptitle(f"Posterior marginals by mode (chain {chain})")
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    return fig
