"""``python -m experiments.run``: one training run from a config file.

Usage:

    python -m experiments.run --config=configs/classification.py:digits_mlp \
        --config.optimizer.learning_rate=0.05 [--workdir=DIR] [--resume | --overwrite]

The config file's ``get_config(arg)`` returns a ``ConfigDict`` built from
``dynamics.train.config.base_config()``; ``:arg`` picks a preset and ``--config.a.b=value``
overrides one field. The config is validated and every piece built before anything compiles or
any file is written: a bad name, field, type or shape prints one line naming the field and the
valid choices and exits with code 2. An override is one argument, ``--config.FIELD=VALUE``
(``--config.FIELD VALUE`` is refused, by ``experiments.sweep`` too). The default workdir is
``runs/<config>-<preset>/<timestamp>``, claimed with an exclusive ``mkdir`` once the config is
built (``-1``, ``-2``, ... appended when runs started in the same second took it); an existing
non-empty ``--workdir`` is refused (code 2) unless ``--resume`` (continue from its last complete
checkpoint) or ``--overwrite`` (delete it first). A diverged run is a result: it is
recorded in ``summary.json`` and exits with code 0.

``--resume`` first compares the config with the recorded ``config.json``
(:mod:`dynamics.train.resume`: only extensions such as more steps or other logging cadences are
accepted, and recorded) and refuses a non-empty directory without a checkpoint; an empty or
absent one starts afresh. SIGTERM or SIGINT stops the run at the end of the chunk in flight with
a checkpoint and status ``interrupted``, prints the command that resumes it and exits with code
143 / 130.

Several processes (one per host or GPU) join one run with ``--coordinator_address=host:port
--num_processes=N --process_id=i``, or automatically under ``srun`` with ``SLURM_NTASKS > 1``;
give them the same ``--workdir``.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import datetime  # noqa: E402
import itertools  # noqa: E402
import pathlib  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

ARGV = list(sys.argv)  # as typed: the flag parser below takes overrides out of sys.argv

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = flags.DEFINE_string(
    "config", None, "config file FILE.py[:preset]; --config.FIELD=VALUE overrides one field"
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

# The --config.FIELD=VALUE arguments, taken out of argv before absl parses it (absl knows no such
# flags); main applies them to the loaded config with ``set_field``, as a sweep does.
_OVERRIDES: list[tuple[str, str]] = []


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser for the runner's flags; every error is one line with exit code 2."""
    from dynamics.registry import ConfigError
    from dynamics.train.config_file import split_overrides

    try:
        overrides, argv = split_overrides(argv)
        rest = FLAGS(argv)
    except ConfigError as e:
        _fail(str(e))
    except flags.Error as e:
        _fail(" ".join(str(e).split()))
    if FLAGS.config is None:
        _fail("--config=configs/NAME.py[:preset] is required")
    if FLAGS.resume and FLAGS.workdir is None:
        _fail("--resume needs --workdir=DIR, the run to continue")
    _OVERRIDES.extend(overrides)
    return rest


def default_workdir(config_arg: str, now: datetime.datetime | None = None) -> pathlib.Path:
    """``runs/<config stem>-<preset>/<YYYYmmdd-HHMMSS>`` (no ``-<preset>`` without a preset)."""
    path, _, preset = config_arg.partition(":")
    name = pathlib.Path(path).stem + (f"-{preset}" if preset else "")
    now = now or datetime.datetime.now()
    return pathlib.Path("runs") / name / now.strftime("%Y%m%d-%H%M%S")


def claim_workdir(path: pathlib.Path) -> pathlib.Path:
    """Creates ``path``, or ``path-1``, ``path-2``, ... if taken, and returns the one it created.

    ``mkdir`` is atomic and fails if the directory exists, so runs started in the same second
    (whose default workdirs have the same timestamp) never share one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        candidate = path if i == 0 else path.with_name(f"{path.name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _check_workdir(workdir: pathlib.Path, resume: bool, overwrite: bool) -> bool:
    """Refuses a non-empty workdir unless resuming or overwriting; True if it must be cleared."""
    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    if workdir.exists() and any(workdir.iterdir()):
        if not (resume or overwrite):
            _fail(f"workdir {workdir} exists and is not empty; pass --resume or --overwrite")
        return overwrite
    return False


def resume_command(argv: list[str], workdir: pathlib.Path) -> str:
    """The shell command that resumes the run started by ``argv`` in ``workdir``."""
    args, skip = [], False
    for arg in argv[1:]:
        name = arg.split("=")[0]
        if skip or name in ("--resume", "--noresume", "--overwrite", "--nooverwrite"):
            skip = False
            continue
        if name == "--workdir":
            skip = "=" not in arg
            continue
        args.append(arg)
    return shlex.join([sys.executable, "-m", "experiments.run", *args, f"--workdir={workdir}"])


def _main(argv: list[str]) -> int:
    del argv
    # Orbax logs every checkpoint step at INFO; the run's own output is the progress bar.
    logging.set_verbosity(logging.WARNING)
    import jax
    from jax.experimental import multihost_utils

    from dynamics.registry import ConfigError
    from dynamics.train import config_file, resume
    from dynamics.train.build import build
    from dynamics.train.config import validate
    from dynamics.train.distributed import maybe_initialize
    from dynamics.train.loop import train

    try:
        _, config = config_file.load(_CONFIG.value)
        config_file.apply_overrides(config, _OVERRIDES)
    except ConfigError as e:
        _fail(str(e))
    config.lock()
    workdir = _WORKDIR.value and pathlib.Path(_WORKDIR.value)
    # Every process looks at the workdir before joining the run, so none of them can see files
    # that another one has already written.
    clear = workdir is not None and _check_workdir(workdir, _RESUME.value, _OVERWRITE.value)
    maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if workdir is None and jax.process_count() > 1:
        _fail("a multi-process run needs the same --workdir on every process")
    try:
        warnings = validate(config)
        flows = config.program == "central_flows"
        if flows:
            from dynamics.flows import experiment as flows_experiment

            if _RESUME.value:
                _fail("--resume: program 'central_flows' has no checkpoints; use --overwrite")
            flows_experiment.check(config)
        # Before anything is built or written: the recorded run must be one this config continues.
        plan = resume.plan(workdir, config) if _RESUME.value else None
        run = None if flows else build(config)
    except ConfigError as e:
        _fail(str(e))
    is_main = jax.process_index() == 0
    if is_main:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if _RESUME.value and plan is None and is_main:
        print(f"{workdir} is empty or absent: nothing to resume, starting afresh", file=sys.stderr)
    if workdir is None:
        workdir = claim_workdir(default_workdir(_CONFIG.value))
    if clear and is_main:
        shutil.rmtree(workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("workdir ready")

    if flows:
        summary = flows_experiment.run(config, workdir)
        if is_main:
            print(f"{summary['status']} at step {summary['step']} -> {workdir}")
        return 0
    try:
        summary = train(run, workdir, resume=plan, start_time=START)
    except ConfigError as e:  # every checkpoint unreadable: nothing was changed
        _fail(str(e))
    if not is_main:
        return 0
    if summary["status"] == "interrupted":
        print(
            f"interrupted by {summary['signal']} at step {summary['step']} (checkpointed); "
            f"resume with: {resume_command(ARGV, workdir)} --resume",
            file=sys.stderr,
        )
        return 128 + getattr(signal, summary["signal"])
    final = summary["final"]
    shown = ", ".join(
        f"{k}={final[k]:.4g}"
        for k in ("loss", "train_accuracy", "test_accuracy")
        if final.get(k) is not None
    )
    print(f"{summary['status']} at step {summary['step']}: {shown} -> {workdir}")
    return 0


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (while the config is built, or a second Ctrl-C): the
        # loop's own handling (checkpoint, then exit 130) covers only the steps.
        print("interrupted: stopped before a checkpoint could be written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
