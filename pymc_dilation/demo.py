"""The demo: DilationLangevin, ``sample_dilation`` and NUTS on a two-mode posterior.

The model is a 2-D Gaussian mixture posterior::

    x ~ N(0, 10^2 I)
    x | ... ∝ 0.2 N(x; (-5, 0), I) + 0.8 N(x; (+5, 0), I)    (a pm.Potential)

Both modes are at the same distance from the prior mean, so the posterior is exactly the mixture
``0.2 N(-m, s^2 I) + 0.8 N(m, s^2 I)`` with ``m = (500/101, 0)`` and ``s^2 = 100/101``: the mode
weights a sampler should find are 0.2 and 0.8.

Run it with ``python -m pymc_dilation demo --output DIR`` (or ``pymc-dilation demo``). It prints a
comparison table and writes PNG figures into ``DIR``: the draws of each sampler over the true
density (``posterior.png``), the tuning of the DilationLangevin chains (step size, acceptance
rates of the Langevin steps and of the jumps between modes) beside the annealing of
``sample_dilation`` (λ, step size and acceptance per stage) (``annealing.png``), and ``x[0]`` of
two DilationLangevin chains over their first draws with the mode of every draw and each chain's
share of each mode (``trajectories.png``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "MODES",
    "PRIOR_SD",
    "TRUE_WEIGHTS",
    "DemoResult",
    "SamplerRun",
    "build_model",
    "format_table",
    "posterior_mixture",
    "run_demo",
    "true_density",
]

PRIOR_SD = 10.0
MODES = np.array([[-5.0, 0.0], [5.0, 0.0]])
TRUE_WEIGHTS = np.array([0.2, 0.8])


def build_model():
    """The demo model: ``x ~ N(0, 10^2 I)`` in 2-D times a two-component mixture potential.

    Returns
    -------
    pymc.Model
        A model with one free variable ``x`` of shape ``(2,)``.
    """
    import pymc as pm

    with pm.Model() as model:
        x = pm.Normal("x", 0.0, PRIOR_SD, shape=2)
        components = [
            np.log(w) + pm.logp(pm.Normal.dist(mu=m, sigma=1.0), x).sum()
            for w, m in zip(TRUE_WEIGHTS, MODES)
        ]
        pm.Potential("mixture", pm.math.logsumexp(pm.math.stack(components)))
    return model


def posterior_mixture() -> tuple[np.ndarray, np.ndarray, float]:
    """The exact posterior as a mixture of isotropic normals.

    Returns
    -------
    weights : numpy.ndarray
        ``(K,)`` mode weights.
    means : numpy.ndarray
        ``(K, 2)`` component means.
    var : float
        Common per-coordinate variance.
    """
    shrink = PRIOR_SD**2 / (PRIOR_SD**2 + 1.0)
    # Each component's evidence is N(m_k; 0, (PRIOR_SD^2 + 1) I), equal for equal |m_k|.
    log_evidence = -0.5 * (MODES**2).sum(axis=1) / (PRIOR_SD**2 + 1.0)
    log_w = np.log(TRUE_WEIGHTS) + log_evidence
    weights = np.exp(log_w - log_w.max())
    return weights / weights.sum(), shrink * MODES, shrink


def true_density(x0: np.ndarray, x1: np.ndarray | None = None) -> np.ndarray:
    """Exact posterior density at ``(x0, x1)``, or the marginal density of ``x0`` if ``x1=None``.

    Parameters
    ----------
    x0, x1 : numpy.ndarray
        Coordinates (broadcast together).

    Returns
    -------
    numpy.ndarray
        The density.
    """
    weights, means, var = posterior_mixture()
    x0 = np.asarray(x0, dtype=float)
    dens = np.zeros(np.broadcast_shapes(x0.shape, () if x1 is None else np.shape(x1)))
    for w, m in zip(weights, means):
        d = np.exp(-0.5 * (x0 - m[0]) ** 2 / var) / np.sqrt(2 * np.pi * var)
        if x1 is not None:
            d = d * np.exp(-0.5 * (np.asarray(x1) - m[1]) ** 2 / var) / np.sqrt(2 * np.pi * var)
        dens = dens + w * d
    return dens


@dataclass
class SamplerRun:
    """One sampler's run on the demo model.

    Attributes
    ----------
    name : str
    draws : numpy.ndarray
        ``(chains, draws, 2)`` posterior draws of ``x``.
    sampling_time : float
        Seconds spent sampling, as the sampler reports it.
    wall_time : float
        Seconds from start to result, compilation included.
    annealing : dict of numpy.ndarray
        ``(chains, iterations)`` arrays: ``step_size``, ``acceptance_rate`` and
        ``jump_acceptance`` of the tuning iterations of a step method, or ``dilation``,
        ``step_size`` and ``acceptance_rate`` of the stages of a population run; empty for NUTS.
    warmup_draws : numpy.ndarray or None
        ``(chains, tune, 2)`` warm-up draws (DilationLangevin only).
    idata : object or None
        What ``pm.sample`` returned (DilationLangevin only), for
        :func:`~pymc_dilation.plot_mode_occupancy`.
    """

    name: str
    draws: np.ndarray
    sampling_time: float
    wall_time: float
    annealing: dict[str, np.ndarray] = field(default_factory=dict)
    warmup_draws: np.ndarray | None = None
    idata: object | None = None

    @property
    def weight_right(self) -> float:
        """Share of the draws in the mode at ``(+5, 0)`` (``x[0] > 0``)."""
        return float((self.draws[..., 0] > 0).mean())

    @property
    def chains_right(self) -> int:
        """Chains with most of their draws in the mode at ``(+5, 0)``."""
        return int(((self.draws[..., 0] > 0).mean(axis=1) > 0.5).sum())

    @property
    def chain_weights(self) -> np.ndarray:
        """Each chain's share of its draws in the mode at ``(+5, 0)``."""
        return (self.draws[..., 0] > 0).mean(axis=1)

    @property
    def max_rhat(self) -> float:
        """Largest rank-normalized R-hat over the coordinates of ``x`` (NaN for one chain)."""
        import arviz as az

        if self.draws.shape[0] < 2:
            return float("nan")
        return float(max(az.rhat(self.draws[..., i]) for i in range(2)))

    @property
    def min_bulk_ess(self) -> float:
        """Smallest bulk ESS over the coordinates of ``x`` (ArviZ, chains as given)."""
        import arviz as az

        return float(min(az.ess(self.draws[..., i], method="bulk") for i in range(2)))


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the runs, the printed table and the figure paths."""

    runs: list[SamplerRun]
    table: str
    figures: list[Path]
    total_time: float


def _settings(fast: bool) -> dict:
    if fast:
        return dict(draws=200, tune=400, chains=4, particles=500, particle_chains=1)
    return dict(draws=1000, tune=1000, chains=8, particles=2000, particle_chains=1)


def _posterior_x(data) -> np.ndarray:
    return np.asarray(data.posterior["x"], dtype=float)


def _run_dilation_langevin(model, cfg, seed, progressbar) -> SamplerRun:
    import pymc as pm

    from pymc_dilation._compat import group_dataset
    from pymc_dilation.step import DilationLangevin

    start = time.perf_counter()
    with model:
        step = DilationLangevin(tune=cfg["tune"])
        data = pm.sample(
            draws=cfg["draws"],
            tune=cfg["tune"],
            chains=cfg["chains"],
            cores=1,
            step=step,
            random_seed=seed,
            progressbar=progressbar,
            discard_tuned_samples=False,
            compute_convergence_checks=False,
        )
    wall = time.perf_counter() - start
    warm = group_dataset(data, "warmup_sample_stats")
    tuning = {k: np.asarray(warm[k]) for k in ("step_size", "acceptance_rate", "jump_acceptance")}
    warm_x = np.asarray(group_dataset(data, "warmup_posterior")["x"], dtype=float)
    return SamplerRun(
        "DilationLangevin",
        _posterior_x(data),
        float(data.posterior.attrs["sampling_time"]),
        wall,
        tuning,
        warm_x,
        data,
    )


def _run_nuts(model, cfg, seed, progressbar) -> SamplerRun:
    import pymc as pm

    start = time.perf_counter()
    with model:
        data = pm.sample(
            draws=cfg["draws"],
            tune=cfg["tune"],
            chains=cfg["chains"],
            cores=1,
            random_seed=seed,
            progressbar=progressbar,
            compute_convergence_checks=False,
            nuts_sampler="pymc",
        )
    wall = time.perf_counter() - start
    return SamplerRun(
        "NUTS (PyMC)", _posterior_x(data), float(data.posterior.attrs["sampling_time"]), wall
    )


def _run_sample_dilation(model, cfg, seed, progressbar) -> SamplerRun:
    from pymc_dilation._compat import group_dataset
    from pymc_dilation.sampling import sample_dilation

    start = time.perf_counter()
    data = sample_dilation(
        cfg["particles"],
        chains=cfg["particle_chains"],
        random_seed=seed,
        progressbar=progressbar,
        model=model,
    )
    wall = time.perf_counter() - start
    stats = group_dataset(data, "sample_stats")
    annealing = {k: np.asarray(stats[k]) for k in ("dilation", "step_size", "acceptance_rate")}
    return SamplerRun(
        "sample_dilation",
        _posterior_x(data),
        float(stats.attrs["sampling_time"]),
        wall,
        annealing,
    )


def format_table(runs: list[SamplerRun]) -> str:
    """The comparison table printed by the demo.

    Parameters
    ----------
    runs : list of SamplerRun

    Returns
    -------
    str
        A fixed-width text table: mode weight found vs true, its error, chains with most of
        their draws in the mode at ``(+5, 0)``, the range of the chains' own weights of that mode,
        the largest R-hat, minimum bulk ESS, ESS per second of sampling, sampling and wall time.
    """
    true_right = float(posterior_mixture()[0][1])
    header = (
        f"{'sampler':<18} {'chains x draws':>14} {'w(+5,0)':>8} {'|err|':>6} "
        f"{'chains in (+5,0)':>16} {'chain w(+5,0)':>13} {'R-hat':>6} {'min ESS':>8} "
        f"{'ESS/s':>8} {'sample s':>9} {'wall s':>7}"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        chains, draws = run.draws.shape[:2]
        ess = run.min_bulk_ess
        per_chain = run.chain_weights
        lines.append(
            f"{run.name:<18} {f'{chains} x {draws}':>14} {run.weight_right:>8.3f} "
            f"{abs(run.weight_right - true_right):>6.3f} {f'{run.chains_right}/{chains}':>16} "
            f"{f'{per_chain.min():.2f}-{per_chain.max():.2f}':>13} {run.max_rhat:>6.2f} "
            f"{ess:>8.0f} {ess / run.sampling_time:>8.0f} {run.sampling_time:>9.2f} "
            f"{run.wall_time:>7.2f}"
        )
    lines += [
        f"True weight of the mode at (+5, 0): {true_right:.3f}. 'chain w(+5,0)': smallest-largest "
        "weight of one chain's draws;",
        "'wall s' includes compilation, 'ESS/s' uses 'sample s'. DilationLangevin chains jump "
        "between the modes of their maps",
        "(exact Metropolis-Hastings); NUTS chains stay in the mode they reach, so each chain's "
        "weight is 0 or 1 (R-hat near 1",
        "only if they all reach the same mode). sample_dilation's draws are the particles of one "
        "chain (as pm.sample_smc's): no R-hat.",
    ]
    return "\n".join(lines)


def _plot_posteriors(runs: list[SamplerRun], path: Path) -> Path:
    import matplotlib.pyplot as plt

    g0, g1 = np.meshgrid(np.linspace(-9, 9, 181), np.linspace(-4, 4, 81))
    dens = true_density(g0, g1)
    grid = np.linspace(-9, 9, 400)
    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 6.4), squeeze=False)
    rng = np.random.default_rng(0)
    for j, run in enumerate(runs):
        ax = axes[0, j]
        ax.contour(g0, g1, dens, levels=8, colors="k", linewidths=0.7, zorder=3)
        pts = run.draws.reshape(-1, 2)
        pts = pts[rng.choice(len(pts), size=min(len(pts), 2000), replace=False)]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.35, color=f"C{j}")
        ax.set(xlim=(-9, 9), ylim=(-4, 4), title=run.name, xlabel="x[0]")
        ax.set_aspect("equal")
        if j == 0:
            ax.set_ylabel("x[1]")
        ax = axes[1, j]
        ax.hist(run.draws[..., 0].ravel(), bins=80, range=(-9, 9), density=True, color=f"C{j}")
        ax.plot(grid, true_density(grid), color="k", lw=1.5, label="true marginal")
        ax.set(xlabel="x[0]", xlim=(-9, 9))
        ax.text(
            0.03,
            0.95,
            f"w(+5,0) = {run.weight_right:.2f}\n(true {posterior_mixture()[0][1]:.2f})",
            transform=ax.transAxes,
            va="top",
        )
        if j == 0:
            ax.set_ylabel("density")
            ax.legend(loc="center", frameon=False)
    fig.suptitle("Draws over the true posterior (contours / black line); mode weights 0.2 : 0.8")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values in a trailing window along the last axis (NaN where none)."""
    finite = np.isfinite(values)
    total = np.cumsum(np.where(finite, values, 0.0), axis=-1)
    count = np.cumsum(finite, axis=-1).astype(float)
    total[..., window:] = total[..., window:] - total[..., :-window]
    count[..., window:] = count[..., window:] - count[..., :-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _plot_annealing(runs: list[SamplerRun], path: Path) -> Path:
    import matplotlib.pyplot as plt

    shown = [run for run in runs if run.annealing]
    fig, axes = plt.subplots(3, len(shown), figsize=(5.5 * len(shown), 7), squeeze=False)
    for j, run in enumerate(shown):
        tuning = run.warmup_draws is not None
        if tuning:
            rows = (
                ("step_size", "step size (whitened)", True),
                ("acceptance_rate", "acceptance rate (Langevin)", False),
                ("jump_acceptance", "jump acceptance (mean of 25)", False),
            )
        else:
            rows = (
                ("dilation", "λ (dilation)", True),
                ("step_size", "step size", True),
                ("acceptance_rate", "acceptance rate", False),
            )
        for i, (key, label, log) in enumerate(rows):
            ax = axes[i, j]
            values = run.annealing[key]
            if key == "jump_acceptance":
                values = _running_mean(values, 25)
            for chain in values:
                ax.plot(chain, lw=0.6, alpha=0.5)
            if len(values) > 1:
                with np.errstate(all="ignore"):
                    median = np.nanmedian(values, axis=0)
                ax.plot(median, color="k", lw=1, label="median over chains")
                if i == len(rows) - 1:
                    ax.legend(loc="lower right", fontsize=8)
            if log:
                ax.set_yscale("log")
            if key != "step_size" and not log:
                ax.set_ylim(-0.03, 1.03)
            ax.set_ylabel(label)
            if i < len(rows) - 1:
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("tuning iteration" if tuning else "stage")
            ax.sharex(axes[0, j])
        if tuning:
            title = f"{run.name}: tuning, one line per chain\n(modes mapped at iteration 0)"
        else:
            n_anneal = int(np.argmax(run.annealing["dilation"][0] >= 1.0))
            title = f"{run.name}: annealing, then refinement\n(λ reaches 1 at stage {n_anneal})"
            for i in range(len(rows)):
                axes[i, j].axvline(n_anneal, color="k", ls=":", lw=1)
        axes[0, j].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_trajectories(run: SamplerRun, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from pymc_dilation.occupancy import plot_mode_occupancy

    shown_draws = min(300, run.draws.shape[1])
    x0 = run.draws[:, :shown_draws, 0]
    fig = plt.figure(figsize=(10, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    top = fig.add_subplot(grid[0, :])
    shown = min(2, len(x0))
    for chain in range(shown):
        top.plot(x0[chain], lw=0.6, alpha=0.8, color=f"C{chain}", label=f"chain {chain}")
    weights, means, _ = posterior_mixture()
    for w, m in zip(weights, means):
        top.axhline(m[0], color="k", ls="--", lw=0.8)
        top.text(shown_draws, m[0], f" weight {w:.1f}", va="center", fontsize=8)
    top.set(xlabel="draw", ylabel="x[0]")
    top.set_title(f"{run.name}: x[0] of {shown} chains, first {shown_draws} draws", fontsize=10)
    top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=shown, fontsize=8, frameon=False)
    plot_mode_occupancy(run.idata, axes=(fig.add_subplot(grid[1, :3]), fig.add_subplot(grid[1, 3])))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(
    output: str | Path,
    fast: bool = False,
    random_seed: int = 2024,
    progressbar: bool = True,
    verbose: bool = True,
) -> DemoResult:
    """Run the three samplers on the demo model, print the table and write the figures.

    Parameters
    ----------
    output : str or pathlib.Path
        Directory for the PNG figures (created if missing).
    fast : bool
        A smaller run (4 chains of 200 draws, 500 particles), as used by the tests.
    random_seed : int
        Seed of every sampler.
    progressbar : bool
        Show the samplers' progress bars.
    verbose : bool
        Print progress messages and the table.

    Returns
    -------
    DemoResult
        The runs, the table and the paths of the figures written.
    """
    import matplotlib

    matplotlib.use("Agg")

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    cfg = _settings(fast)
    model = build_model()
    say = print if verbose else (lambda *a, **k: None)
    start = time.perf_counter()
    runs = []
    for label, runner in (
        ("DilationLangevin (pm.sample)", _run_dilation_langevin),
        ("NUTS (pm.sample)", _run_nuts),
        ("sample_dilation (population)", _run_sample_dilation),
    ):
        say(f"--- {label}")
        runs.append(runner(model, cfg, random_seed, progressbar))
    table = format_table(runs)
    say("\n" + table + "\n")
    figures = [
        _plot_posteriors(runs, output / "posterior.png"),
        _plot_annealing(runs, output / "annealing.png"),
        _plot_trajectories(runs[0], output / "trajectories.png"),
    ]
    total = time.perf_counter() - start
    say("Figures: " + ", ".join(str(f) for f in figures))
    say(f"Total time {total:.1f} s")
    return DemoResult(runs, table, figures, total)
