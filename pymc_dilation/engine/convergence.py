"""Convergence checks of a refined population, from what the refinement already computed.

Candidates measured (see :func:`population_checks`); thresholds live in
:mod:`pymc_dilation.diagnostics`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["population_checks", "rank_rhat"]


def _ranks_normal(x: np.ndarray) -> np.ndarray:
    """Rank-normalised values (Vehtari et al., 2021), columnwise."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    r = rankdata(x, axis=0)
    return ndtri((r - 0.375) / (len(x) + 0.25))


def rank_rhat(groups: list[np.ndarray]) -> np.ndarray:
    """Rank-normalised R-hat per column over ``groups`` of ``(n_g, d)`` draws (equal sizes)."""
    n = min(len(g) for g in groups)
    stacked = np.concatenate([g[:n] for g in groups])
    z = _ranks_normal(stacked).reshape(len(groups), n, -1)
    within = z.var(axis=1, ddof=1).mean(axis=0)
    between = n * z.mean(axis=1).var(axis=0, ddof=1)
    var = (n - 1) / n * within + between / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(var / within)


def population_checks(
    start: np.ndarray,
    us: np.ndarray,
    grads: np.ndarray,
    sweep_lp: np.ndarray,
    last_acceptance: np.ndarray,
    step: np.ndarray,
) -> dict[str, float]:
    """Candidate convergence figures of a refined population (coordinates of the refinement)."""
    n, d = us.shape
    out: dict[str, float] = {}
    g = grads
    gbar = g.mean(axis=0)
    gsd = g.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_mean = gbar / (gsd / np.sqrt(n))
        eff_mean = np.abs(gbar) / gsd
        prod = (us - us.mean(axis=0)) * (g - gbar)
        cov = prod.mean(axis=0)
        cov_se = prod.std(axis=0, ddof=1) / np.sqrt(n)
        z_cov = (cov + 1.0) / cov_se
    out["stein_mean_z"] = float(np.nanmax(np.abs(z_mean)))
    out["stein_mean_eff"] = float(np.nanmax(eff_mean))
    out["stein_cov_z"] = float(np.nanmax(np.abs(z_cov)))
    out["stein_cov_err"] = float(np.nanmax(np.abs(cov + 1.0)))
    # whole-matrix Stein identity error, scale-free: E[(u - ū) gᵀ] = -I
    full = (us - us.mean(axis=0)).T @ (g - gbar) / n
    out["stein_matrix_err"] = float(np.linalg.norm(full + np.eye(d), 2))
    out["rhat_start_end"] = float(np.nanmax(rank_rhat([start, us])))
    half = n // 2
    out["rhat_halves"] = float(np.nanmax(rank_rhat([us[:half], us[half : 2 * half]])))
    if len(sweep_lp) >= 2:
        lp_sd = float(np.sqrt(max(sweep_lp[-1, 1], 1e-300)))
        mid = len(sweep_lp) // 2
        out["lp_drift"] = float((sweep_lp[-1, 0] - sweep_lp[mid, 0]) / lp_sd)
        out["lp_drift_all"] = float((sweep_lp[-1, 0] - sweep_lp[0, 0]) / lp_sd)
    else:
        out["lp_drift"] = out["lp_drift_all"] = np.nan
    out["stuck_share"] = float(np.mean(last_acceptance < 0.05))
    q = np.quantile(step, [0.1, 0.9])
    out["step_spread"] = float(np.log10(q[1] / q[0]))
    moved = np.linalg.norm(us - start, axis=1)
    out["unmoved_share"] = float(np.mean(moved == 0.0))
    return out
