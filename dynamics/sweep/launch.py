"""From a config file to runner command lines: load the sweep, check it, build each run's argv.

A config file ``configs/NAME.py`` defines ``get_config(arg)`` and may define ``get_sweep(arg)``
returning the runs as override dicts (see :mod:`dynamics.sweep.grid`); without it the sweep is
the one run ``base``. Every run is ``python -m experiments.run --config=FILE[:arg]
--workdir=SWEEP_DIR/NAME [--resume|--overwrite] [shared overrides] [run overrides]``, launched from
the directory the sweep was started in, with its output appended to ``SWEEP_DIR/logs/NAME.log``.

Before anything is launched, every run's overrides are applied to a copy of the config and
checked with :func:`dynamics.train.config.validate`, so a misspelled field or optimizer fails the
sweep in one line instead of failing N jobs on a cluster. Device counts are checked by each run on
its own devices (the machine that submits may have none).

Example:
  >>> config, runs = load_sweep("configs/classification.py")  # doctest: +SKIP
  >>> check_runs(config, runs, shared=["--config.num_steps=10"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynamics.registry import ConfigError
from dynamics.sweep.manifest import RUNNER_FLAGS, Manifest, Run


def absolute_config(spec: str, cwd: str | os.PathLike = ".") -> str:
    """``FILE[:arg]`` with FILE made absolute, so runs started elsewhere find it."""
    path, sep, arg = spec.partition(":")
    return str(Path(cwd, path).resolve()) + sep + arg


def load_sweep(spec: str):
    """``(get_config(arg), get_sweep(arg))`` of the config file ``FILE[:arg]``."""
    from dynamics.train import config_file  # imports jax: not needed to follow Slurm jobs

    module, config = config_file.load(spec)
    _, sep, arg = spec.partition(":")
    runs = module.get_sweep(*((arg,) if sep else ())) if hasattr(module, "get_sweep") else [{}]
    if not runs:
        raise ConfigError(f"get_sweep of {spec} returned no runs")
    return config, [dict(r) for r in runs]


def check_runs(config, runs: Sequence[Mapping[str, Any]], shared: Sequence[str] = ()) -> list[str]:
    """Raises ConfigError if an override does not apply to ``config`` or a run fails validation;
    returns the validation warnings, each prefixed with its run.

    ``shared`` are ``--config.FIELD=VALUE`` arguments for every run, applied (with the value parsed
    as the runner parses it) before each run's own overrides; their fields must not be swept (the
    sweep's value would silently win).
    """
    from dynamics.train import config_file
    from dynamics.train.config import set_field, validate

    pairs, rest = config_file.split_overrides(shared)
    if rest:
        raise ConfigError(f"override {rest[0]!r} is not of the form --config.FIELD=VALUE")
    for key, _ in pairs:
        if any(key in run for run in runs):
            raise ConfigError(f"--config.{key} is also set by the sweep; drop one of them")
    base = config_file.apply_overrides(copy.deepcopy(config), pairs)
    warnings = []
    for i, run in enumerate(runs):
        c = copy.deepcopy(base)
        for key, value in run.items():
            set_field(c, key, value, f"sweep run {i}")
        try:
            warnings += [
                f"sweep run {i}: {w}" for w in validate(c, num_devices=c.mesh.data * c.mesh.model)
            ]
        except ConfigError as e:
            raise ConfigError(f"sweep run {i} {dict(run)}: {e}") from None
    return warnings


def runner_argv(manifest: Manifest, run: Run, action: str) -> list[str]:
    """The command line that starts (or resumes, or retries) ``run``."""
    from dynamics.sweep.naming import format_value

    return [
        sys.executable,
        "-m",
        "experiments.run",
        f"--config={manifest.config}",
        f"--workdir={run.workdir}",
        *RUNNER_FLAGS[action],
        *manifest.overrides,
        *(f"--config.{k}={format_value(v)}" for k, v in run.overrides.items()),
    ]


def popen(argv: Sequence[str], cwd: str, log: str | os.PathLike, **kwargs: Any) -> subprocess.Popen:
    """Starts ``argv`` in ``cwd`` with stdout and stderr appended to ``log`` (and the command line,
    shell-quoted, before them); ``kwargs`` go to ``subprocess.Popen``."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(("$ " + shlex.join(argv) + "\n").encode())
        f.flush()
        return subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, **kwargs)
