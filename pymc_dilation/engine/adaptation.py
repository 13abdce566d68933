"""Step-size and preconditioner adaptation."""

from __future__ import annotations

import numpy as np

__all__ = [
    "DualAveraging",
    "RunningMean",
    "TrajectoryLength",
    "UTurnLengths",
    "WindowCovariance",
    "WindowSamples",
    "shrunk_root",
]


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


class WindowSamples:
    """The draws and gradients of one adaptation window, kept for
    :func:`~pymc_dilation.engine.metric.estimate_metric`.

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
        self._draws: list[np.ndarray] = []
        self._grads: list[np.ndarray] = []

    @property
    def n(self) -> int:
        """Draws kept."""
        return len(self._draws)

    def add(self, draw: np.ndarray, grad: np.ndarray) -> None:
        """Add one draw ``(d,)`` and the log density's gradient there, when both are finite."""
        if np.all(np.isfinite(draw)) and np.all(np.isfinite(grad)):
            self._draws.append(np.array(draw, dtype=float))
            self._grads.append(np.array(grad, dtype=float))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(draws, grads)``, each ``(n, d)``."""
        return np.array(self._draws).reshape(-1, self.dim), np.array(self._grads).reshape(
            -1, self.dim
        )


class RunningMean:
    """The mean of the draws since the last :meth:`restart`; until two have come, the mean
    before it (or ``initial``).
    """

    def __init__(self, initial: np.ndarray):
        self._previous = np.array(initial, dtype=float)
        self._mean = self._previous.copy()
        self.n = 0

    def add(self, draw: np.ndarray) -> None:
        """Add one draw (ignored when not finite)."""
        if np.all(np.isfinite(draw)):
            self.n += 1
            self._mean = self._mean + (draw - self._mean) / self.n

    def restart(self) -> None:
        """Start a new window; its mean is the old one until two draws have come."""
        self._previous = self.mean
        self.n = 0

    @property
    def mean(self) -> np.ndarray:
        """The current estimate of the mean."""
        return self._mean.copy() if self.n >= 2 else self._previous.copy()


class TrajectoryLength:
    """Adapt a jittered Hamiltonian trajectory's length by the ChEES criterion, charged for its
    gradients, on one chain.

    ChEES (Hoffman, Radul & Sountsov 2021) is the expected change of the squared distance to
    the mean, ``C(T) = E[α (‖x' − m‖² − ‖x − m‖²)²] / 4``, a proxy for the autocorrelation of
    the slowest second moments; its stochastic gradient from one transition is
    ``α (‖x' − m‖² − ‖x − m‖²) ((x' − m) · p') h`` (``α`` the acceptance probability, ``p'``
    the end momentum, ``h`` the jitter: the trajectory was ``h T`` long). Here Adam ascends
    ``C(T) / √T`` in ``log T`` (gradient ``T C'(T) − C(T) / 2``, up to a positive factor),
    which charges a long trajectory for its gradients. Measured (one chain, 1000 tuning
    iterations): maximising ``C`` let garch's length drift to 70 (73 leapfrog steps a draw,
    146 s for 2 × 2000 iterations); ``C / T`` (ChEES per gradient) cut the length to 0.7 on a
    100-D standard normal (36 gradients per effective draw against ChEES's 10); ``C / √T``
    gave 8.5 there, 54 (ChEES 70) with sds spread over ``e^±1``, and garch 3 leapfrog steps
    a draw. ChEES averages it over many parallel chains; here one chain
    averages it over iterations, with Adam's first moment, and ``m`` is the chain's own
    estimate of the mean (in whitened coordinates).

    Lengths are in whitened units; the number of leapfrog steps of a trajectory is
    ``ceil(h T / step_size)`` with ``h`` uniform on ``(0, 1]``, capped at ``max_steps``.

    Parameters
    ----------
    initial_length : float
        ``T`` at the start.
    max_steps : int
        Most leapfrog steps of one trajectory.
    learning_rate, beta1, beta2 : float
        Adam's parameters on ``log T``.
    """

    def __init__(
        self,
        initial_length: float,
        max_steps: int,
        learning_rate: float = 0.05,
        beta1: float = 0.9,
        beta2: float = 0.99,
    ):
        self.log_length = float(np.log(initial_length))
        self.log_length_bar = self.log_length
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.beta1, self.beta2 = beta1, beta2
        self._m = 0.0
        self._v = 0.0
        self._count = 0

    @property
    def length(self) -> float:
        """The current (tuning) trajectory length."""
        return float(np.exp(self.log_length))

    @property
    def length_bar(self) -> float:
        """The averaged length, used once tuning ends."""
        return float(np.exp(self.log_length_bar))

    def n_steps(self, length: float, step_size: float, jitter: float) -> int:
        """Leapfrog steps of a trajectory of length ``jitter * length``."""
        return int(min(self.max_steps, max(1, np.ceil(jitter * length / step_size))))

    def update(
        self,
        start: np.ndarray,
        end: np.ndarray,
        end_momentum: np.ndarray,
        mean: np.ndarray,
        acceptance: float,
        jitter: float,
        step_size: float,
    ) -> None:
        """One Adam step on ``log T`` from one transition (whitened coordinates)."""
        if not (np.isfinite(acceptance) and np.all(np.isfinite(end))):
            acceptance, end, end_momentum = 0.0, start, np.zeros_like(start)
        end_offset = end - mean
        # A trajectory that flew off (finite but huge, rejected) overflows here: it is skipped.
        with np.errstate(over="ignore", invalid="ignore"):
            change = end_offset @ end_offset - (start - mean) @ (start - mean)
            # T C'(T) - C(T) / 2: the gradient in log T of C(T) / sqrt(T), up to a positive
            # factor
            gradient = acceptance * (
                change * (end_offset @ end_momentum) * jitter * self.length
                - 0.125 * change * change
            )
        if not np.isfinite(gradient):
            return
        self._count += 1
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * gradient
        self._v = self.beta2 * self._v + (1.0 - self.beta2) * gradient * gradient
        m_hat = self._m / (1.0 - self.beta1**self._count)
        v_hat = self._v / (1.0 - self.beta2**self._count)
        self.log_length += self.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-12)
        low, high = np.log(step_size), np.log(self.max_steps * step_size)
        self.log_length = float(np.clip(self.log_length, low, high))
        weight = max(1.0 / self._count, 0.05)
        self.log_length_bar = (1.0 - weight) * self.log_length_bar + weight * self.log_length


class UTurnLengths:
    """Trajectory lengths drawn from the chain's own U-turn lengths, jittered (empirical HMC).

    The eHMC of Wu, Stoehr & Robert (2018): while tuning, trajectories are continued (for
    measurement only) to their first U-turn, the first step after which a trajectory moves back
    towards its start (``(u_t - u_0) . p_t < 0`` in whitened coordinates, NUTS's criterion for
    one end), and the length it took (``steps × step size``, whitened units) is kept. A
    trajectory then runs ``ceil(h L / ε)`` steps, with ``L`` drawn uniformly from the kept
    lengths and ``h`` uniform on ``jitter``. The length is drawn independently of the chain's
    state once tuning ends, so the kernel stays exact.

    ``h`` stands in for NUTS's choice of a point along its trajectory. On a Gaussian the U-turn
    comes after half a period (``T = π`` whitened), where a trajectory of length ``T`` leaves
    ``corr(x', x) = cos T`` and ``corr(x'², x²) = cos² T``: the U-turn point itself would
    leave every square as it was. Measured over regressions (d = 50, 200), kidiq, eight
    schools, a 100-group hierarchy and radon, seeds 1 and 3, 2 × (1000 + 1000):
    ``h ∈ [0.5, 1]`` made means antithetic (min bulk ESS up to 2× that of ``[0.25, 1]``) but
    left the squares correlated (min tail ESS 515-533 against 662-758 on the regressions,
    sd errors up to 0.19 on eight schools); ``[0.25, 0.75]`` (centred on the quarter
    period, best for squares on a Gaussian) lost half the tail ESS on stochastic
    volatility (330 against 751) and a third of the bulk ESS on garch. ``[0.25, 1]`` (the
    default) was best or near it on min tail ESS everywhere, at 0.6 of a U-turn's gradients.

    The lengths depend on the preconditioner, so those measured before its last change are
    used only while fewer than ``min_kept`` came after it.

    Parameters
    ----------
    initial_length : float
        ``L`` before any U-turn was measured.
    max_steps : int
        Most leapfrog steps of one trajectory (and of the continuation).
    min_kept : int
        Lengths the draw rests on, at least (older ones fill in).
    jitter : tuple of float
        The range of ``h``, within ``(0, 1]``.
    """

    def __init__(
        self,
        initial_length: float,
        max_steps: int,
        min_kept: int = 50,
        jitter: tuple[float, float] = (0.25, 1.0),
    ):
        self.initial_length = float(initial_length)
        self.max_steps = max_steps
        self.min_kept = min_kept
        self.jitter = jitter
        self._epochs: list[list[float]] = [[]]
        self._frozen: np.ndarray | None = None

    def add(self, uturn_steps: int, step_size: float) -> None:
        """Keep one measured U-turn (``uturn_steps`` leapfrog steps of ``step_size``); a
        trajectory that did not turn within :attr:`max_steps` counts as that long."""
        steps = self.max_steps if uturn_steps < 0 else uturn_steps
        self._epochs[-1].append(steps * step_size)

    def restart(self) -> None:
        """The preconditioner changed: lengths measured from now on come first."""
        if self._epochs[-1]:
            self._epochs.append([])

    @property
    def lengths(self) -> np.ndarray:
        """The lengths a trajectory's length is drawn from (whitened units)."""
        if self._frozen is not None:
            return self._frozen
        kept: list[float] = []
        for epoch in reversed(self._epochs):
            kept = epoch + kept
            if len(kept) >= self.min_kept:
                break
        return np.array(kept if kept else [self.initial_length])

    def freeze(self) -> None:
        """End tuning: the lengths are fixed from now on."""
        self._frozen = self.lengths

    def n_steps(self, step_size: float, rng: np.random.Generator) -> tuple[int, float]:
        """Leapfrog steps of the next trajectory, and the jitter ``h`` it used."""
        lengths = self.lengths
        length = lengths[rng.integers(len(lengths))]
        jitter = float(rng.uniform(*self.jitter))
        steps = int(min(self.max_steps, max(1, np.ceil(jitter * length / step_size))))
        return steps, jitter
