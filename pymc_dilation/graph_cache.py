"""Compiled log densities found again without PyTensor's graph rewrites.

``pytensor.function`` rewrites a model's log-density graph before it compiles it, and on a warm
PyTensor and Numba disk cache those rewrites are most of what building a step method costs
(measured on eight schools: 0.43 s of a 0.61 s ``DilationLangevin()``, in every process and
every call). PyTensor's own cache key is computed only after the rewrites, from the rewritten
graph. This module keys the graph *before* them (:func:`graph_key`) and remembers which compiled
point function it became, in memory for the process and on disk (a small file in PyTensor's
Numba cache directory naming the compiled function's own cache key), so a graph compiled
before is loaded without rewriting it.

The key is exact in the sense PyTensor's rewrites rely on: two graphs get the same key when
their Ops are equal (same type and ``__props__``, which is what makes PyTensor treat Ops as
interchangeable; a scalar Op, which has no ``__props__``, by its type and attributes), wired
alike, with equal constants (dtype, shape and bytes) and equal variable types, under the same
PyTensor and Numba versions and configuration. Anything the key cannot describe (an attribute
that is not plain data, a shared variable whose value may change) gives no key, and the graph
is compiled as before.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytensor
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.op import Op
from pytensor.graph.traversal import io_toposort

from pymc_dilation._compat import NUMBA_CACHE_PATH

__all__ = ["graph_key", "recall", "remember"]

_log = logging.getLogger(__name__)

KEY_VERSION = "1"
MEMORY_SIZE = 32
"""Compiled functions kept in memory per process (most recently used first)."""
_MAX_DEPTH = 12

_memory: OrderedDict[str, Any] = OrderedDict()


class _Unkeyable(Exception):
    """Something in the graph that the key cannot describe."""


def _digest_array(data: np.ndarray) -> str:
    data = np.ascontiguousarray(data)
    digest = hashlib.sha256(data.view(np.uint8) if data.size else b"").hexdigest()
    return f"array({data.dtype.str},{data.shape},{digest})"


def _key_of(value: Any, depth: int = 0) -> str:
    """A string that determines ``value`` (an Op property, a type, a constant's data)."""
    if depth > _MAX_DEPTH:
        raise _Unkeyable("nested too deeply")
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if isinstance(value, np.ndarray):
        return _digest_array(value)
    if isinstance(value, np.generic):
        return _digest_array(np.asarray(value))
    if isinstance(value, np.dtype):
        return f"dtype({value.str})"
    if isinstance(value, slice):
        return f"slice({_key_of(value.start)},{_key_of(value.stop)},{_key_of(value.step)})"
    if isinstance(value, list | tuple):
        return "(" + ",".join(_key_of(item, depth + 1) for item in value) + ")"
    if isinstance(value, dict):
        items = sorted((_key_of(k, depth + 1), _key_of(v, depth + 1)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, Variable):
        raise _Unkeyable("a graph variable among an Op's properties")
    if isinstance(value, type):
        return f"class({value.__module__}.{value.__qualname__})"
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    props = getattr(type(value), "__props__", None)
    if props is not None:  # Ops and types: equal props mean interchangeable in PyTensor
        return name + _key_of({p: getattr(value, p) for p in props}, depth + 1)
    if callable(value) and hasattr(value, "__qualname__") and not isinstance(value, Op):
        return f"function({value.__module__}.{value.__qualname__})"  # e.g. a type rule
    if hasattr(value, "__dict__"):
        # Scalar Ops have no __props__; their type and attributes (output type rule, name)
        # determine them, as their __eq__ says. An attribute the key cannot describe makes
        # the whole graph unkeyable, never a wrong match.
        return name + _key_of(vars(value), depth + 1)
    raise _Unkeyable(f"cannot key a {name}")


def graph_key(inputs: Sequence[Variable], outputs: Sequence[Variable], mode: str) -> str | None:
    """Key of the function ``inputs -> outputs`` compiled in ``mode``, before any rewrite.

    None when the graph holds something the key cannot describe (see the module docstring).
    """
    try:
        coords: dict[Variable, str] = {var: f"in{i}" for i, var in enumerate(inputs)}
        parts = [f"v{KEY_VERSION}", pytensor.__version__, numba.__version__, mode]
        parts += [f"{name}={getattr(pytensor.config, name, None)}" for name in _CONFIG]
        parts += [_key_of(var.type) for var in inputs]
        for i, node in enumerate(io_toposort(list(inputs), list(outputs))):
            wiring = []
            for var in node.inputs:
                if var not in coords:
                    if not isinstance(var, Constant):  # a shared or free variable
                        raise _Unkeyable(f"graph input {var} is not a constant")
                    coords[var] = f"const({_key_of(var.type)},{_key_of(var.data)})"
                wiring.append(coords[var])
            for j, out in enumerate(node.outputs):
                coords[out] = f"n{i}.{j}"
            types = ",".join(_key_of(out.type) for out in node.outputs)
            parts.append(f"{_key_of(node.op)}<-({','.join(wiring)})->({types})")
        parts.append(",".join(coords.get(out, "?") for out in outputs))
    except _Unkeyable as why:
        _log.debug("No graph key (%s); the graph is rewritten and compiled.", why)
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


_CONFIG = ("floatX", "numba__fastmath", "numba__cache", "compute_test_value")


def _path(key: str) -> Path | None:
    if NUMBA_CACHE_PATH is None:
        return None
    return Path(NUMBA_CACHE_PATH) / "pymc_dilation_graphs" / f"{key}.txt"


def recall(key: str, load) -> Any | None:
    """What ``key`` compiled to: from memory, else ``load(stored_text)`` from disk, else None.

    ``load`` turns the text stored by :func:`remember` back into the compiled object; it returns
    None (or raises) when that object is gone from the disk cache.
    """
    if key in _memory:
        _memory.move_to_end(key, last=False)
        return _memory[key]
    path = _path(key)
    if path is None or not path.is_file():
        return None
    try:
        compiled = load(path.read_text().strip())
    except Exception as err:  # a stale or unreadable entry: compile as if there were none
        _log.debug("Cached graph %s could not be loaded (%s).", key, err)
        return None
    if compiled is not None:
        _keep(key, compiled)
    return compiled


def remember(key: str, compiled: Any, text: str | None) -> None:
    """Keep ``compiled`` in memory under ``key``, and ``text`` (how to load it) on disk."""
    _keep(key, compiled)
    path = _path(key)
    if text is None or path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{np.random.default_rng().integers(1 << 62)}.tmp")
        temporary.write_text(text)
        temporary.replace(path)  # atomic: a concurrent reader sees all of it or nothing
    except OSError as err:  # a read-only cache: the memory still serves this process
        _log.debug("Could not store graph key %s (%s).", key, err)


def _keep(key: str, compiled: Any) -> None:
    _memory[key] = compiled
    _memory.move_to_end(key, last=False)
    while len(_memory) > MEMORY_SIZE:
        _memory.popitem(last=True)
