"""Step-size and preconditioner adaptation."""

from __future__ import annotations

import numpy as np

__all__ = ["DualAveraging", "WindowCovariance", "shrunk_root"]


class DualAveraging:
    """Nesterov dual averaging of ``log eps`` towards a target acceptance probability.

    The scheme of Hoffman & Gelman (2014), with their defaults, as PyMC's NUTS uses it.

    Parameters
    ----------
    initial_step : float
        Starting step size; the iterates are shrunk towards ``log(10 * initial_step)``.
    target_accept : float
        Target mean acceptance probability, in ``(0, 1)``.
    gamma, t0, kappa : float
        Regularisation, early-iteration damping and decay of the averaging weights.
    """

    def __init__(
        self,
        initial_step: float,
        target_accept: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        self.target_accept = target_accept
        self.gamma = gamma
        self.t0 = t0
        self.kappa = kappa
        self.restart(initial_step)

    def restart(self, initial_step: float, bias: float = 10.0) -> None:
        """Start afresh from ``initial_step`` (after the preconditioner changed).

        The iterates are shrunk towards ``log(bias * initial_step)``: ``bias=10`` is Hoffman &
        Gelman's choice for a fresh start (it favours larger steps); ``bias=1`` restarts at the
        step size reached.
        """
        self.mu = np.log(bias * initial_step)
        self.log_step = np.log(initial_step)
        self.log_step_bar = np.log(initial_step)
        self.hbar = 0.0
        self.count = 0

    @property
    def step_size(self) -> float:
        """The current (tuning) step size."""
        return float(np.exp(self.log_step))

    @property
    def step_size_bar(self) -> float:
        """The averaged step size, used once tuning ends."""
        return float(np.exp(self.log_step_bar))

    def update(self, accept_stat: float) -> None:
        """Move the step size after a step whose mean acceptance was ``accept_stat``."""
        if not np.isfinite(accept_stat):
            accept_stat = 0.0
        self.count += 1
        t = self.count
        weight = 1.0 / (t + self.t0)
        self.hbar = (1.0 - weight) * self.hbar + weight * (self.target_accept - accept_stat)
        self.log_step = self.mu - np.sqrt(t) / self.gamma * self.hbar
        eta = t ** (-self.kappa)
        self.log_step_bar = eta * self.log_step + (1.0 - eta) * self.log_step_bar


class WindowCovariance:
    """Running (Welford) mean and dense covariance of the draws of one adaptation window.

    Parameters
    ----------
    dim : int
        Number of coordinates.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        """Forget every draw seen."""
        self.n = 0
        self.mean = np.zeros(self.dim)
        self.m2 = np.zeros((self.dim, self.dim))

    def add(self, draw: np.ndarray) -> None:
        """Add one draw of shape ``(d,)``."""
        self.n += 1
        delta = draw - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + np.outer(delta, draw - self.mean)

    def covariance(self, prior: np.ndarray, prior_count: float) -> np.ndarray:
        """The window's sample covariance shrunk towards ``prior``.

        ``(n S + c P) / (n + c)`` with ``c = prior_count``: with few draws (fewer than the
        dimension, where ``S`` is singular) the prior dominates; with many, the draws do.
        """
        if self.n < 2:
            return prior
        sample = self.m2 / (self.n - 1)
        return (self.n * sample + prior_count * prior) / (self.n + prior_count)


def shrunk_root(covariance: np.ndarray, dense: bool) -> np.ndarray:
    """A square root ``R`` of ``covariance`` (``R Rᵀ``), lower-triangular (``dense``) or
    diagonal (the covariance's diagonal only), with a relative jitter so it always exists."""
    dim = covariance.shape[0]
    diag = np.clip(np.diag(covariance), 1e-300, None)
    if not dense:
        return np.diag(np.sqrt(diag))
    scale = np.sqrt(diag)
    correlation = covariance / np.outer(scale, scale)
    try:
        root = np.linalg.cholesky(correlation + 1e-8 * np.eye(dim))
    except np.linalg.LinAlgError:
        return np.diag(scale)
    return scale[:, None] * root
