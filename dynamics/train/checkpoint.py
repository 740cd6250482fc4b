"""Checkpoints of the train state and the probe states with orbax, atomic and keep-last-N.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact; :meth:`Checkpoints.latest_step` only sees
finished ones. Saving is synchronous: the step donates its state buffers, and a checkpoint must be
on disk before the metrics after it are trusted by a resume.

Example:
  >>> ckpt = Checkpoints("/tmp/run/checkpoints", keep=2)  # doctest: +SKIP
  >>> ckpt.save(100, state, probe_states)                    # doctest: +SKIP
  >>> state, probe_states = ckpt.restore(ckpt.latest_step(), state, probe_states)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree``: orbax restores into exactly these."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """An orbax ``CheckpointManager`` holding ``{"state": TrainState, "probes": {...}}``.

    Probes without state (no array leaves) leave out the ``probes`` item, which orbax cannot store
    empty.
    """

    def __init__(self, directory, keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, probe_states: Any) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if jax.tree.leaves(probe_states):
            items["probes"] = ocp.args.StandardSave(probe_states)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, state_like: Any, probes_like: Any) -> tuple[Any, Any]:
        """Restores checkpoint ``step`` with the structure and shardings of the ``*_like`` trees."""
        items = {"state": ocp.args.StandardRestore(_abstract(state_like))}
        if jax.tree.leaves(probes_like):
            items["probes"] = ocp.args.StandardRestore(_abstract(probes_like))
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["probes"] if "probes" in items else probes_like

    def close(self) -> None:
        self.manager.close()
