"""``python -m experiments.run``: one training run from a config file.

Usage:

    python -m experiments.run --config=configs/classification.py:digits_mlp \
        --config.optimizer.learning_rate=0.05 [--workdir=DIR] [--resume | --overwrite]

The config file's ``get_config(arg)`` returns a ``ConfigDict`` built from
``dynamics.train.config.base_config()``; ``:arg`` picks a preset and ``--config.a.b=value``
overrides one field. The config is validated and every piece built before anything compiles or
any file is written: a bad name, field, type or shape prints one line naming the field and the
valid choices and exits with code 2. The default workdir is ``runs/<config>-<preset>/<timestamp>``;
an existing non-empty workdir is refused (code 2) unless ``--resume`` (continue from its last
complete checkpoint) or ``--overwrite`` (delete it first). A diverged run is a result: it is
recorded in ``summary.json`` and exits with code 0.

Several processes (one per host or GPU) join one run with ``--coordinator_address=host:port
--num_processes=N --process_id=i``, or automatically under ``srun`` with ``SLURM_NTASKS > 1``;
give them the same ``--workdir``.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import datetime  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "config file, optionally with :preset", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "run directory (default runs/<config>-<preset>/<time>)"
)
_RESUME = flags.DEFINE_bool("resume", False, "continue from the last checkpoint in --workdir")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "delete an existing --workdir first")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for a multi-process run"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in a multi-process run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's id in a multi-process run")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# Overrides of probes and of the sections whose extra keys are constructor arguments (data, model,
# optimizer, ...), applied by ``set_field`` after the config file is loaded: absl only overrides
# fields the file defines, while naming a probe adds it and a constructor argument may be new
# (``--config.optimizer.eps_root=1e-16``); ``validate`` checks them against the constructors.
_SECTION_OVERRIDES: list[tuple[str, str]] = []


def _is_section_override(key: str) -> bool:
    from dynamics.train.config import RESERVED

    section = key.rpartition(".")[0]
    return key.startswith("probes.") or section in RESERVED


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with every flag or config-file error as one line and exit code 2."""
    for arg in [a for a in argv if a.startswith("--config.")]:
        key, sep, value = arg[len("--config.") :].partition("=")
        if not _is_section_override(key):
            continue
        if not sep:
            _fail(f"override {arg!r} is not of the form --config.FIELD=VALUE")
        _SECTION_OVERRIDES.append((key, value))
        argv.remove(arg)
    try:
        rest = FLAGS(argv)
        if FLAGS.config is None:
            _fail("--config=configs/NAME.py[:preset] is required")
    except SystemExit:
        raise
    except AttributeError as e:
        # config_flags raises a bare AttributeError("'depth'") for an override of a missing field.
        key = str(e).strip("\"'")
        overrides = [a[len("--config.") :].split("=")[0] for a in argv if a.startswith("--config.")]
        field = next((p for p in overrides if key in p.split(".")), key)
        _fail(f"unknown field config.{field}: the config defines no such key")
    except Exception as e:  # noqa: BLE001 -- any error loading the config is the user's to fix
        _fail(" ".join(str(e).split()) or type(e).__name__)
    return rest


def default_workdir(config_arg: str, now: datetime.datetime | None = None) -> pathlib.Path:
    """``runs/<config stem>-<preset>/<YYYYmmdd-HHMMSS>`` (no ``-<preset>`` without a preset)."""
    path, _, preset = config_arg.partition(":")
    name = pathlib.Path(path).stem + (f"-{preset}" if preset else "")
    now = now or datetime.datetime.now()
    return pathlib.Path("runs") / name / now.strftime("%Y%m%d-%H%M%S")


def _check_workdir(workdir: pathlib.Path, resume: bool, overwrite: bool) -> bool:
    """Refuses a non-empty workdir unless resuming or overwriting; True if it must be cleared."""
    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    if workdir.exists() and any(workdir.iterdir()):
        if not (resume or overwrite):
            _fail(f"workdir {workdir} exists and is not empty; pass --resume or --overwrite")
        return overwrite
    return False


def main(argv: list[str]) -> int:
    del argv
    # Orbax logs every checkpoint step at INFO; the run's own output is the progress bar.
    logging.set_verbosity(logging.WARNING)
    import jax
    from jax.experimental import multihost_utils

    from dynamics.registry import ConfigError
    from dynamics.train.config import parse_override, set_field, validate
    from dynamics.train.distributed import maybe_initialize
    from dynamics.train.loop import build, train

    config_arg = FLAGS["config"].serialize().partition("=")[2]
    workdir = pathlib.Path(_WORKDIR.value or default_workdir(config_arg))
    # Every process looks at the workdir before joining the run, so none of them can see files
    # that another one has already written.
    clear = _check_workdir(workdir, _RESUME.value, _OVERWRITE.value)
    maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _WORKDIR.value is None and jax.process_count() > 1:
        _fail("a multi-process run needs the same --workdir on every process")
    config = _CONFIG.value
    try:
        for key, value in _SECTION_OVERRIDES:
            set_field(config, key, parse_override(config, key, value), where=f"--config.{key}")
        validate(config)
        flows = config.get("program", "train") == "central_flows"
        if flows:
            from dynamics.flows import experiment as flows_experiment

            if _RESUME.value:
                _fail("--resume: program 'central_flows' has no checkpoints; use --overwrite")
            flows_experiment.check(config)
        run = None if flows else build(config)
    except ConfigError as e:
        _fail(str(e))
    if clear and jax.process_index() == 0:
        shutil.rmtree(workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("workdir ready")

    if flows:
        summary = flows_experiment.run(config, workdir)
        print(f"{summary['status']} at step {summary['step']} -> {workdir}")
        return 0
    summary = train(run, workdir, resume=_RESUME.value, start_time=START)
    final = summary["final"]
    shown = ", ".join(
        f"{k}={final[k]:.4g}" for k in ("loss", "train_accuracy", "test_accuracy") if k in final
    )
    if jax.process_index() == 0:
        print(f"{summary['status']} at step {summary['step']}: {shown} -> {workdir}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
