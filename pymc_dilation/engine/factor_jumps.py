"""Jumps between the modes of independent factors: a chain's counterpart of sampling a product
factor by factor (:mod:`~pymc_dilation.engine.blocks`).

A chain on ``π(x) = Π_b π_b(x_b)`` whose factors have several modes each needs to jump in
every factor, not between the few hundred combinations of modes its map holds (16 double
wells: 65 536; such a map's weights are too uneven to jump by, and the chains kept the wells
they started in, 0.1-0.5 off a factor's share). At every iteration each factor ``b`` with
several modes proposes new coordinates ``x_b'`` from the mixture ``q_b`` of its modes'
Gaussians (an independence proposal), accepted with probability
``min(1, π(x') q_b(x_b) / (π(x) q_b(x_b')))`` with the other coordinates unchanged. Each is a
Metropolis-Hastings step on one factor, exact for any ``q_b``; as the factors are
independent, the ratio of factor ``b`` involves ``π_b`` alone, so all are evaluated in one
batched call and accepted independently, which is their product kernel, exact for the
product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pymc_dilation.engine.weights import MixtureProposal, StackedMixtures

__all__ = ["FactorJumps"]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FactorJumps:
    """Each multimodal factor's coordinates and the mixture of its modes' Gaussians.

    Attributes
    ----------
    groups : list of numpy.ndarray
        The coordinates of each factor with several modes.
    proposals : list of MixtureProposal
        Each factor's proposal, in its own coordinates (``len(group)`` dimensions; no
        truncation).
    """

    groups: list[np.ndarray]
    proposals: list[MixtureProposal]

    def __post_init__(self):
        object.__setattr__(self, "_stacked", StackedMixtures(self.groups, self.proposals))

    def jump(
        self, logp_grad: BatchLogpGrad, x: np.ndarray, lp: float, grad: np.ndarray, rng
    ) -> tuple[tuple[np.ndarray, float, np.ndarray], float]:
        """One jump per factor, all evaluated in one call: ``((x, lp, grad), acceptance)``,
        ``acceptance`` the factors' mean Metropolis-Hastings acceptance probability. A
        proposal with a non-finite log density or gradient is rejected."""
        stacked = self._stacked
        n = len(self.groups)
        moves = stacked.draw(rng)
        log_q_old = stacked.log_density(stacked.gather(x))
        log_q_new = stacked.log_density(moves)
        rows = np.repeat(x[None], n, axis=0)
        rows[stacked.factor, stacked.coordinate] = moves[stacked.factor, stacked.slot]
        with np.errstate(all="ignore"):
            lps, grads = logp_grad(rows)
        lps = np.asarray(lps, dtype=float)
        ok = np.isfinite(lps) & np.all(np.isfinite(grads), axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            log_ratio = np.where(ok, lps - lp + log_q_old - log_q_new, -np.inf)
        accepted = np.log(rng.uniform(size=n)) < log_ratio
        x_new, grad_new = x.copy(), np.array(grad, dtype=float)
        # The factors are independent: each accepted one brings its own coordinates, their
        # gradient, and its change of the log density.
        taken = accepted[stacked.factor]
        factor, coordinate = stacked.factor[taken], stacked.coordinate[taken]
        x_new[coordinate] = rows[factor, coordinate]
        grad_new[coordinate] = np.asarray(grads)[factor, coordinate]
        lp_new = float(lp + np.sum(lps[accepted] - lp))
        acceptance = float(np.mean(np.exp(np.minimum(log_ratio, 0.0))))
        return (x_new, lp_new, grad_new), acceptance
