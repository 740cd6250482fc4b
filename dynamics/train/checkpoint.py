"""Checkpoints of the train state and the probe states with orbax, atomic and keep-last-N.

Orbax writes each checkpoint into a temporary directory (``<step>.orbax-checkpoint-tmp-*``) and
renames it to ``<step>`` when complete, so a run killed mid-save leaves the previous checkpoint
intact and :func:`complete_steps` only sees finished ones. Saving is synchronous: the step donates
its state buffers, and a checkpoint must be on disk before the metrics after it are trusted by a
resume.

A complete checkpoint can still be unreadable (a disk fault, a file truncated by a full disk or a
copy cut short). :meth:`Checkpoints.restore_latest` tries the newest first and falls back to older
ones, moving each unreadable one aside to ``<directory>-unreadable/<step>`` (kept for inspection,
out of orbax's way so the resumed run can save that step again).

Example:
  >>> ckpt = Checkpoints("/tmp/run/checkpoints", keep=2)  # doctest: +SKIP
  >>> ckpt.save(100, state, probe_states)                    # doctest: +SKIP
  >>> step, state, probe_states, bad = ckpt.restore_latest(state, probe_states)  # doctest: +SKIP
"""

from __future__ import annotations

import pathlib
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp


class UnreadableCheckpoints(Exception):
    """Every complete checkpoint failed to restore; ``args[0]`` is ``[(step, error), ...]``."""


def complete_steps(directory) -> list[int]:
    """The steps of the finished checkpoints in ``directory`` (oldest first); [] if none.

    Reads the directory listing only (no orbax manager, which would create the directory).
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree``: orbax restores into exactly these."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _first_line(error: BaseException, limit: int = 120) -> str:
    """``Type: first line`` of ``error``, cut at ``limit`` characters (TensorStore's run long)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _drop_abandoned_read_reports() -> None:
    """From now on, drops the reports of orbax read coroutines abandoned by a failed restore.

    When one array of a checkpoint fails to read, orbax raises and leaves its reads of the other
    arrays unawaited; each of those raises again when it is finally garbage-collected (at a random
    later moment, often at exit, from orbax's own event loop), which Python reports as an
    ``Exception ignored in: <coroutine ...>`` traceback on stderr, after the run's one-line error.
    The failure itself is already reported, so once a restore has failed those reports are
    dropped for the rest of the process; every other unraisable exception still reaches the
    previous hook. Installed at most once.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_reads", False):
        return

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if code is None or "orbax" not in code.co_filename:
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook


class Checkpoints:
    """An orbax ``CheckpointManager`` holding ``{"state": TrainState, "probes": {...}}``.

    Probes without state (no array leaves) leave out the ``probes`` item, which orbax cannot store
    empty.
    """

    def __init__(self, directory, keep: int):
        self.directory = pathlib.Path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

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

    def restore_latest(
        self, state_like: Any, probes_like: Any, *, move_aside: bool = True
    ) -> tuple[int, Any, Any, list[tuple[int, str]]]:
        """The newest readable checkpoint: ``(step, state, probe_states, unreadable)``.

        ``unreadable`` lists ``(step, first line of the error)`` of the newer checkpoints that
        failed to restore; with ``move_aside`` (process 0) they are moved out of the directory.
        Raises :class:`UnreadableCheckpoints` (moving nothing) when none can be read.
        """
        unreadable = []
        for step in reversed(self.manager.all_steps()):
            try:
                state, probes = self.restore(step, state_like, probes_like)
            except Exception as e:  # noqa: BLE001 -- tensorstore, orbax and OS errors alike
                _drop_abandoned_read_reports()
                unreadable.append((step, _first_line(e)))
                continue
            if unreadable and move_aside:
                aside = self.directory.with_name(self.directory.name + "-unreadable")
                aside.mkdir(exist_ok=True)
                for bad, _ in unreadable:
                    target, n = aside / str(bad), 1
                    while target.exists():  # the same step found unreadable again
                        target, n = aside / f"{bad}.{n}", n + 1
                    shutil.move(self.directory / str(bad), target)
                self.manager.reload()
            return step, state, probes, unreadable
        raise UnreadableCheckpoints(unreadable)

    def close(self) -> None:
        self.manager.close()
