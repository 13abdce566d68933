"""One BLAS thread for the samplers' dense linear algebra.

``pm.sample(cores=1)`` means one core for the whole run (its ``blas_cores="auto"`` is the
number of cores), but PyMC cannot enforce that where processes fork (pymc-devs/pymc#7354), so
OpenBLAS keeps a thread per core. When another process holds a core, those threads spin
waiting for each other: measured on this project's 2-core machine with one other job
running, a 1005 × 1005 ``eigh`` took 3.1 s instead of 0.08 s, and one chain of a 500-group
hierarchy 114 s instead of 21 s. PyMC's parallel chains already run with one BLAS thread each.
The limit is set around the stages that factorise matrices (the tuning population, metric
refits at the end of adaptation windows, map growth, the population sampler's run), and
around whole iterations only once one takes more than a millisecond (entering it costs about
20 µs; big models' gradients are BLAS calls too). Alone on the machine it cost a 1000-D
regression, whose gradient two idle cores share, 12 % (29.0 s against 26.0 s).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]


@cache
def _controller() -> ThreadpoolController:
    # Built at first use: it inspects the BLAS libraries loaded by then (NumPy's and SciPy's).
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager:
    """A context in which BLAS (OpenBLAS, MKL, ...) runs on one thread."""
    return _controller().limit(limits=1, user_api="blas")
