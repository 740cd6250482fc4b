"""Sweeps: many runs of one config, locally or on Slurm, resumable, with a results table.

* :mod:`~dynamics.sweep.grid`: ``axis``, ``product``, ``zip``, ``chain`` build the runs (override
  dicts) a config's ``get_sweep(arg)`` returns.
* :mod:`~dynamics.sweep.naming`: run directory names from overrides.
* :mod:`~dynamics.sweep.manifest`: ``sweep.json`` and what a re-run does with each run.
* :mod:`~dynamics.sweep.launch`: loading and checking a sweep, the runner's command lines.
* :mod:`~dynamics.sweep.local`, :mod:`~dynamics.sweep.slurm`: the executors;
  :mod:`~dynamics.sweep.requeue`: the Slurm task that requeues a preempted run with ``--resume``.
* :mod:`~dynamics.sweep.results`: the table, ``results.csv`` and the plot.

The command line is ``python -m experiments.sweep`` (see ``experiments/sweep.py``).

Example (in ``configs/NAME.py``):
  >>> from dynamics import sweep as sw
  >>> def get_sweep(arg=None):
  ...     lrs = sw.axis("optimizer.learning_rate", [0.01, 0.02])
  ...     return sw.product(lrs, sw.axis("seed", [0, 1]))
  >>> len(get_sweep())
  4
"""

from dynamics.sweep.grid import axis, chain, product, zip
from dynamics.sweep.naming import run_name

__all__ = ["axis", "chain", "product", "run_name", "zip"]
