"""What ``--resume`` may continue: the checkpoint to start from and the config changes it accepts.

A resumed run is only the continuation of the recorded one if it computes the same thing, so the
new config is compared with the run directory's ``config.json`` before anything is built, compiled
or written (:func:`plan`):

* identical: resume;
* only *safe* fields differ: resume, and record the change (``resume_history`` in
  ``config.json``, ``resumes`` in ``summary.json``). A field is safe when the steps already taken
  are the ones the new config would have taken, so only what is observed or how far the run goes
  changes:

  - ``num_steps`` upward, when the learning-rate schedule does not depend on it (``constant``,
    ``linear_warmup``; a cosine decay over ``num_steps`` would have given other learning rates
    to the steps already taken);
  - cadences: ``log_every``, ``eval_every``, ``probes.<name>.every`` of a probe the run already
    has (a new or removed probe changes the checkpointed probe states), ``checkpoint_every``,
    ``keep_checkpoints``;
  - ``stop.*`` (when to stop early), ``analysis.name`` (computed from the records at the end),
    ``plots``, ``progress``, ``tensorboard``.

* anything else (learning rate, seed, which changes the data split, model, optimizer, precision,
  mesh, ...): refused with one line naming the differing fields.

A non-empty directory without a complete checkpoint is refused too (resuming it would start over
and overwrite its records); an empty or absent one starts fresh.

Example:
  >>> from dynamics.train.config import base_config
  >>> old, new = base_config(), base_config()
  >>> new.num_steps, new.log_every, new.seed = 2000, 5, 1
  >>> changes = differences(config_record(old), config_record(new))
  >>> sorted(changes)
  ['log_every', 'num_steps', 'seed']
  >>> unsafe(changes, new)
  ['seed']
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from typing import Any

from dynamics.registry import ConfigError
from dynamics.train import checkpoint

HISTORY = "resume_history"  # the key of config.json listing the resumes
CADENCES = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")
OUTPUT_FLAGS = ("plots", "progress", "tensorboard", "analysis.name")
# Schedules whose values do not depend on num_steps (see dynamics.train.schedules).
NUM_STEPS_FREE_SCHEDULES = ("constant", "linear_warmup")

_ABSENT = "<absent>"


@dataclasses.dataclass(frozen=True)
class Resume:
    """A resume :func:`plan` accepted: the changed fields ``{key: (old, new)}`` and the history."""

    workdir: pathlib.Path
    changes: dict[str, tuple[Any, Any]]
    history: list[dict]

    def entry(self, step: int) -> dict[str, Any]:
        """This resume as recorded: its step, UTC time and changed fields ``[old, new]``."""
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        changed = {k: list(v) for k, v in self.changes.items()}
        return {"step": step, "time": now, "changed": changed}


def config_record(config) -> dict[str, Any]:
    """The config as ``config.json`` records it (JSON types: tuples are lists)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(recorded: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (recorded value, new value)}`` of the fields that differ."""
    old = _flatten({k: v for k, v in recorded.items() if k != HISTORY})
    new = _flatten(new)
    keys = sorted(old.keys() | new.keys())
    return {
        k: (old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    }


def _is_safe(key: str, old: Any, new: Any, config) -> bool:
    if key == "num_steps":
        free = config.optimizer.schedule.name in NUM_STEPS_FREE_SCHEDULES
        return free and isinstance(old, int) and new >= old
    if key in CADENCES or key in OUTPUT_FLAGS or key.startswith("stop."):
        return True
    parts = key.split(".")
    return (
        len(parts) == 3
        and parts[0] == "probes"
        and parts[2] == "every"
        and _ABSENT
        not in (
            old,
            new,
        )
    )


def unsafe(changes: dict[str, tuple[Any, Any]], config) -> list[str]:
    """The keys of ``changes`` that a resume cannot accept (see the module docstring)."""
    return [k for k, (old, new) in changes.items() if not _is_safe(k, old, new, config)]


def _describe(key: str, old: Any, new: Any, config) -> str:
    text = f"{key} ({old!r} -> {new!r}"
    if key == "num_steps" and isinstance(old, int) and new >= old:
        text += f", but schedule {config.optimizer.schedule.name!r} depends on it"
    return text + ")"


def plan(workdir, config) -> Resume | None:
    """Checks that ``workdir`` can be resumed with ``config``; None: start fresh (empty or absent).

    Raises ConfigError (one line) for a non-empty directory without a complete checkpoint or
    ``config.json``, or a config that differs in a field a resume cannot change. Reads only.
    """
    workdir = pathlib.Path(workdir)
    if not workdir.exists() or not any(workdir.iterdir()):
        return None
    again = "use --overwrite to start again"
    if not checkpoint.complete_steps(workdir / "checkpoints"):
        raise ConfigError(f"no checkpoint in {workdir}; {again}")
    path = workdir / "config.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path} to compare the config with ({e}); {again}") from None
    changes = differences(recorded, config_record(config))
    refused = unsafe(changes, config)
    if refused:
        fields = ", ".join(_describe(k, *changes[k], config) for k in refused)
        raise ConfigError(
            f"--resume with a different config: {fields} differ from {path}; a resume may only "
            "raise num_steps (constant or linear_warmup schedule) and change log_every, "
            "eval_every, probes.*.every, checkpoint_every, keep_checkpoints, stop, analysis, "
            f"plots, progress or tensorboard; {again}"
        )
    return Resume(workdir, changes, list(recorded.get(HISTORY, [])))
