"""Building the runs of a sweep: lists of override dicts combined by product, zip and chain.

A sweep is a list of override dicts, one per run, each mapping a dotted config field to a value
(``{"optimizer.learning_rate": 0.1, "seed": 0}``). A config file returns one from
``get_sweep(arg)``; these helpers build it from one-field axes:

* ``axis(key, values)`` is ``[{key: v} for v in values]``;
* ``product(a, b, ...)`` is every merge ``{**x, **y, ...}`` for ``x in a, y in b, ...`` (the first
  argument varies slowest, like nested for loops);
* ``zip(a, b, ...)`` merges the i-th dicts of equally long lists;
* ``chain(a, b, ...)`` concatenates.

Merging two dicts that set the same field is an error: it would silently drop a run's value.

Example (4 runs: two learning rates, each with two seeds, and adam with its own learning rate):
  >>> from dynamics import sweep as sw
  >>> runs = sw.chain(
  ...     sw.product(sw.axis("optimizer.learning_rate", [0.1, 0.2]), sw.axis("seed", [0, 1])),
  ...     sw.zip(sw.axis("optimizer.name", ["adam"]), sw.axis("optimizer.learning_rate", [1e-3])),
  ... )
  >>> runs[1]
  {'optimizer.learning_rate': 0.1, 'seed': 1}
  >>> runs[4]
  {'optimizer.name': 'adam', 'optimizer.learning_rate': 0.001}
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dynamics.registry import ConfigError

Overrides = dict[str, Any]


def axis(key: str, values: Iterable[Any]) -> list[Overrides]:
    """One run per value of the dotted config field ``key``."""
    return [{key: v} for v in values]


def _merge(dicts: Sequence[Mapping[str, Any]]) -> Overrides:
    merged: Overrides = {}
    for d in dicts:
        for k, v in d.items():
            if k in merged:
                raise ConfigError(f"sweep sets {k} twice in one run ({merged[k]!r} and {v!r})")
            merged[k] = v
    return merged


def product(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """Every combination of one run from each sweep; the first sweep varies slowest."""
    return [_merge(combo) for combo in itertools.product(*sweeps)]


def zip(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """The i-th runs of equally long sweeps merged into one run."""
    lengths = {len(s) for s in sweeps}
    if len(lengths) > 1:
        raise ConfigError(f"sweep zip of lists with different lengths {sorted(lengths)}")
    return [_merge(combo) for combo in builtins.zip(*sweeps, strict=True)]


def chain(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """The runs of every sweep, one after the other."""
    return [dict(run) for s in sweeps for run in s]
