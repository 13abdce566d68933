"""What the chains of one ``pm.sample`` call tell each other.

PyMC runs each chain's step method on its own (in a process of its own when ``cores > 1``) and
calls no step method at the end of a run, so checks that compare chains (mode maps that
disagree, a chain whose log density stays far below another's) cannot run where PyMC's own
convergence checks do. Instead each chain of a ``DilationLangevin`` run writes a short summary
(:class:`ChainSummary`) to a directory its sibling chains share, every
:data:`SUMMARY_DRAWS` draws after tuning, and compares it with the summaries already there; a
disagreement becomes one of PyMC's sampler warnings, logged as ``pm.sample`` samples.

The directory lies in the system's temporary directory and is named by what the chains of one
run share and other runs do not: the entropy of the seed sequence PyMC spawns the chains'
generators from (fresh for every call without a ``random_seed``; a call repeated with the same
seed, model, data and options repeats the same draws, so its older summaries agree with the new
ones), the model's variables, data and log density at its initial point, the step's options,
the tuning length when PyMC gives it (PyMC 6), and the versions of PyMC and Python. Chains
that run one after the other see the earlier ones; parallel chains see each other once both
have sampled :data:`SUMMARY_DRAWS` draws. Only the warnings depend on this: the draws never do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ChainSummary",
    "RunRegistry",
    "LOGP_GAP",
    "MODE_COUNT_RATIO",
    "MODE_SHARE",
    "SUMMARY_DRAWS",
    "disagreements",
    "run_registry",
    "visited_modes",
]

SUMMARY_DRAWS = 100
"""Draws after tuning between two summaries (and before the first)."""
LOGP_GAP = 4.0
"""A chain's mean log density this many of the chains' log-density sds (at least half the
``√(d / 2)`` of a Gaussian posterior's) below another's is reported: two chains of one
posterior differ by well under one sd after 100 draws, and a chain stuck 1550 nats below the
others' region (a factor model, 521 parameters, sd about 16) by a hundred."""
MODE_SHARE = 0.05
"""A mode counts as visited by a chain that has at least this share of its draws there: a
chain's map can hold an optimum its draws never reach (one chain of four on gp_pois_regr
mapped a second mode of a unimodal posterior)."""
MODE_COUNT_RATIO = 2
"""Chains are reported as disagreeing when one visited at least this many times as many
modes as another (one against two, ten against twenty): chains of many small modes differ by
a few from chain to chain with their shares right (40-mode 2-D mixtures: maps of 22-32 modes
in four chains, worst chain's total variation 0.06-0.10)."""
STALE_SECONDS = 24 * 3600.0
"""Run directories untouched this long are removed when a new one is made."""
ROOT_NAME = "pymc_dilation_chains"


@dataclass(frozen=True)
class ChainSummary:
    """What one chain reports of itself.

    Attributes
    ----------
    chain : str
        The chain's label (its generator's spawn key).
    n_modes : int
        Modes of the chain's map that hold at least :data:`MODE_SHARE` of its draws.
    logp_mean, logp_sd : float
        Mean and sd of the log density at the chain's draws since tuning.
    draws : int
        Draws since tuning the two rest on.
    dim : int
        Number of sampled coordinates.
    """

    chain: str
    n_modes: int
    logp_mean: float
    logp_sd: float
    draws: int
    dim: int


def chain_label(rng: np.random.Generator) -> tuple[str, str] | None:
    """``(entropy, label)`` of a chain's generator as PyMC spawned it, or None when it was not
    spawned from a seed sequence (then the chain cannot find its siblings)."""
    seed_seq = getattr(rng.bit_generator, "seed_seq", None)
    spawn_key = getattr(seed_seq, "spawn_key", ())
    if seed_seq is None or not spawn_key:
        return None
    return str(seed_seq.entropy), "-".join(str(k) for k in spawn_key)


class RunRegistry:
    """The directory where the chains of one run leave their summaries.

    Parameters
    ----------
    directory : pathlib.Path
        The run's directory (made when missing).
    label : str
        This chain's label.
    """

    def __init__(self, directory: Path, label: str):
        self.directory = directory
        self.label = label
        self.warned: set[str] = set()

    def publish(self, summary: ChainSummary) -> None:
        """Write this chain's summary (atomically: a reader sees the old one or the new)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(asdict(summary), stream)
            os.replace(temporary, self.directory / f"{self.label}.json")
        except OSError:  # a read-only or full temporary directory: no cross-chain checks
            pass

    def others(self) -> list[ChainSummary]:
        """The summaries the other chains of the run have written so far."""
        found = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return found
        for path in paths:
            if path.stem == self.label:
                continue
            try:
                found.append(ChainSummary(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):  # being replaced, or foreign
                continue
        return found


def run_registry(rng: np.random.Generator, signature: tuple) -> RunRegistry | None:
    """The registry of the run whose chain draws from ``rng``; ``signature`` holds what else
    identifies the run (the model's variables and data, the step's options)."""
    label = chain_label(rng)
    if label is None:
        return None
    entropy, chain = label
    digest = hashlib.blake2b(repr((entropy, signature)).encode(), digest_size=12).hexdigest()
    root = Path(tempfile.gettempdir()) / ROOT_NAME
    _remove_stale(root)
    return RunRegistry(root / digest, chain)


def _remove_stale(root: Path) -> None:
    """Remove the run directories under ``root`` untouched for :data:`STALE_SECONDS`."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def visited_modes(visits: np.ndarray) -> int:
    """Modes holding at least :data:`MODE_SHARE` of a chain's draws (``visits[k]`` draws in
    mode ``k``)."""
    total = visits.sum()
    return int(np.sum(visits >= MODE_SHARE * total)) if total > 0 else 0


def disagreements(mine: ChainSummary, others: list[ChainSummary]) -> dict[str, str]:
    """What ``mine`` disagrees with in each of ``others``: ``{other chain: message}``."""
    found = {}
    for other in others:
        problems = []
        fewer, more = sorted((mine.n_modes, other.n_modes))
        # 0 and 0: no mode holds 5 % of either chain's draws (a product of factors whose
        # chains jump by factor spreads them over thousands of combinations)
        if more > fewer and more >= MODE_COUNT_RATIO * fewer:
            problems.append(
                f"the chains visit different modes: chain {mine.chain} {mine.n_modes}, chain "
                f"{other.chain} {other.n_modes} (modes holding 5 % of a chain's draws or more). "
                "A mode missed by some chains may be missed by all: increase "
                "DilationLangevin(particles=...) and compare with "
                "pymc_dilation.sample_dilation; pymc_dilation.check_mode_maps(idata) and "
                "mode_occupancy(idata) show where the chains' draws went"
            )
        floor = 0.5 * np.sqrt(max(mine.dim, 1) / 2.0)
        scale = max(mine.logp_sd, other.logp_sd, floor)
        gap = other.logp_mean - mine.logp_mean
        if abs(gap) > LOGP_GAP * scale:
            low, high = (mine, other) if gap > 0 else (other, mine)
            problems.append(
                f"chain {low.chain}'s draws have a log density {abs(gap):.1f} below chain "
                f"{high.chain}'s on average (sds {low.logp_sd:.1f} and {high.logp_sd:.1f}): "
                "the chains sample different regions, and the lower one most likely not the "
                "posterior's bulk. Check R-hat, compare with NUTS "
                "(pymc_dilation.compare_with_nuts), or tune longer"
            )
        if problems:
            found[other.chain] = "DilationLangevin: " + "; ".join(problems) + "."
    return found
