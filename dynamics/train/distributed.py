"""Joining a multi-process run: ``jax.distributed.initialize`` when launched as several processes.

Two launches are recognized:

* explicit flags: a coordinator ``host:port``, the number of processes and this process's id
  (every process gets the same coordinator and count, ids 0..n-1);
* Slurm: under ``srun`` with ``SLURM_STEP_NUM_TASKS > 1`` JAX reads the coordinator, count and id
  from the Slurm environment itself.

A single process (the default) initializes nothing. After initialization ``jax.devices()`` lists
the devices of every process and the mesh spans them all.

Example:
  >>> maybe_initialize()  # one process, no Slurm: nothing to do
  False
"""

from __future__ import annotations

import os

import jax


def maybe_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Initializes ``jax.distributed`` if this is one process of several; returns whether it did."""
    if coordinator_address:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    # A job step's task count, not SLURM_NTASKS: a batch script that runs Python without srun has
    # SLURM_NTASKS > 1 but is one process, and JAX cannot find a coordinator outside a step.
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        jax.distributed.initialize()
        return True
    return False
