r"""Run a sweep of one config locally or on Slurm; re-running the same command carries it on.

    python -m experiments.sweep --config=configs/NAME.py[:preset] --executor=local|slurm \
        [--max_parallel=N] [--sweep_dir=DIR] [--limit=N] [--dry_run] [--retry_failed] \
        [--metric=NAME] [--x=FIELD] [--config.a.b=value ...]
    python -m experiments.sweep --sweep_dir=DIR --report [--metric=NAME] [--x=FIELD]

Flags are absl flags spelt as ``experiments.run`` spells its own (underscores); ``--help`` lists
them. The runs are the override dicts of the config file's ``get_sweep(preset)`` (one run without
it); ``--config.a.b=value`` applies to every run, one argument each as for ``experiments.run``
(``--config.a.b value`` is refused by both). ``--dry_run`` prints what each run would do and its
runner command line, shell-quoted with the interpreter first, ready to paste. Each run is
``python -m experiments.run`` in ``DIR/<name from its overrides>`` with its log in ``DIR/logs/``;
``DIR/sweep.json`` records every run. Re-running skips completed and diverged runs, resumes
interrupted ones from their checkpoints and retries failed ones only with ``--retry_failed``. A
failing or diverging run never stops the others. At the end the table of every run (status, swept
values, summary metrics) is printed and written to ``DIR/results.csv``, and ``--metric`` (default:
``final.loss``, else the first numeric summary metric) is plotted against ``--x`` (default: the
first numeric swept field) in ``DIR/plots/``. ``--report`` rebuilds table and plot from the
manifest alone.

Slurm settings come from flags or from the config's ``sweep`` section (flags win)::

    config.sweep = dict(partition="gpu", time_min=240, gpus_per_task=1, cpus_per_task=8,
                        mem="32G", sbatch={"account": "my-lab"}, max_parallel=16,
                        metric="final_sharpness", x="optimizer.learning_rate")

A run that fails keeps the last line of its log (its error) as ``reason`` in ``sweep.json``, the
table and ``results.csv``.

Exit codes: 0 when every run has ended (whatever its status), 2 for an invalid config, sweep or
flag (one line), 130 when interrupted (re-run the command to resume).
"""

from __future__ import annotations

import collections
import os
import shlex
import sys
from pathlib import Path

from absl import flags

from dynamics.registry import ConfigError
from dynamics.sweep import launch, manifest, naming, results
from dynamics.sweep.local import run_local
from dynamics.sweep.slurm import SlurmOptions, run_slurm

SLURM_FIELDS = [f for f in SlurmOptions.__dataclass_fields__]
SECTION_FIELDS = {*SLURM_FIELDS, "max_parallel", "metric", "x"}


# (kind, name, default, help) of every flag; the Slurm ones override the config's sweep section.
FLAG_SPECS = [
    ("string", "config", None, "FILE[:preset] with get_config(arg) and get_sweep(arg)"),
    ("integer", "max_parallel", None, "runs at once (local: 1, slurm: all)"),
    ("string", "sweep_dir", None, "default: runs/sweeps/<config name>[-<preset>]"),
    ("integer", "limit", None, "keep only the first N runs (a quick trial)"),
    ("bool", "dry_run", False, "print the runner command lines; change nothing"),
    ("bool", "retry_failed", False, "start failed runs again"),
    ("bool", "report", False, "table and plot from sweep.json only"),
    ("string", "metric", None, "summary metric to plot (default: final.loss)"),
    ("string", "x", None, "swept field on the plot's x axis (default: first numeric one)"),
    ("float", "poll", 5.0, "seconds between Slurm queue checks"),
    ("string", "partition", None, "Slurm partition"),
    ("integer", "time_min", None, "time limit of each run in minutes"),
    ("integer", "nodes", None, "nodes per run"),
    ("integer", "ntasks_per_node", None, "JAX processes per node (GPUs/node)"),
    ("integer", "cpus_per_task", None, "CPUs per task"),
    ("integer", "gpus_per_task", None, "GPUs per task"),
    ("string", "mem", None, "memory per node, e.g. 32G"),
    ("multi_string", "sbatch", [], "extra #SBATCH line KEY=VALUE (repeatable)"),
]


def _define_flags() -> flags.FlagValues:
    """The sweep's flags, in a FlagValues of their own (``main`` may be called more than once)."""
    fv = flags.FlagValues()
    flags.DEFINE_enum("executor", "local", ["local", "slurm"], "where the runs go", flag_values=fv)
    for kind, name, default, help_text in FLAG_SPECS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)
    return fv


def parse_args(argv: list[str]) -> tuple[flags.FlagValues, list[str]]:
    """``(flags, shared overrides)``; ConfigError (one line) for anything that does not parse.

    The overrides are the ``--config.FIELD=VALUE`` arguments, parsed as ``experiments.run`` parses
    them (:mod:`dynamics.train.config_file`); every other argument is an absl flag.
    """
    from dynamics.train.config_file import split_overrides

    overrides, rest = split_overrides(argv)
    fv = _define_flags()
    try:
        positional = fv(["python -m experiments.sweep", *rest])[1:]
    except flags.Error as e:
        raise ConfigError(" ".join(str(e).split())) from None
    if positional:
        raise ConfigError(f"unexpected argument {positional[0]!r}; flags are --NAME=VALUE")
    if not fv.report and not fv.config:
        raise ConfigError("--config=configs/NAME.py[:preset] is required (or --report)")
    if fv.report and not (fv.sweep_dir or fv.config):
        raise ConfigError("--report needs --sweep_dir (or the --config that names it)")
    return fv, [f"--config.{k}={v}" for k, v in overrides]


def default_sweep_dir(spec: str) -> Path:
    path, _, arg = spec.partition(":")
    return Path("runs", "sweeps", Path(path).stem + (f"-{arg}" if arg else ""))


def sweep_section(config) -> dict:
    """The config's ``sweep`` section as a plain dict, checked against the known fields."""
    section = config.get("sweep") if hasattr(config, "get") else None
    if section is None:
        return {}
    section = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    unknown = sorted(set(section) - SECTION_FIELDS)
    if unknown:
        raise ConfigError(
            f"unknown field sweep.{unknown[0]}; valid fields: {', '.join(sorted(SECTION_FIELDS))}"
        )
    return section


def slurm_options(args: flags.FlagValues, section: dict) -> SlurmOptions:
    values = {k: section[k] for k in SLURM_FIELDS if k in section}
    given = [k for k in SLURM_FIELDS if k != "sbatch" and getattr(args, k) is not None]
    values.update({k: getattr(args, k) for k in given})
    sbatch = dict(values.get("sbatch") or {})
    for item in args.sbatch:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--sbatch {item!r} is not KEY=VALUE")
        sbatch[key.lstrip("-")] = value
    values["sbatch"] = sbatch
    return SlurmOptions(**values)


def plan(args, shared: list[str], sweep_dir: Path) -> tuple[manifest.Manifest, list, dict]:
    """Loads and checks the sweep; returns the manifest, the runs to launch and the section."""
    config, overrides = launch.load_sweep(args.config)
    if args.limit is not None:
        overrides = overrides[: args.limit]
    for warning in launch.check_runs(config, overrides, shared):
        print(f"warning: {warning}", file=sys.stderr)
    spec = launch.absolute_config(args.config)
    m = manifest.load(sweep_dir)
    if m is None:
        m = manifest.Manifest(config=spec, overrides=shared, cwd=os.getcwd())
    elif (m.config, m.overrides) != (spec, shared):
        raise ConfigError(
            f"{sweep_dir} holds a sweep of {m.config} with overrides {m.overrides}; "
            "use another --sweep_dir for a different config or overrides"
        )
    planned, seen = [], {}
    for i, o in enumerate(overrides):
        name = naming.run_name(o)
        if name in seen:
            raise ConfigError(f"sweep runs {seen[name]} and {i} have the same overrides {o}")
        seen[name] = i
        run = m.run(name)
        if run is None:
            run = manifest.Run(name=name, overrides=o, workdir=str((sweep_dir / name).resolve()))
            m.runs.append(run)
        planned.append(manifest.refresh(run))
    for run in m.runs:
        manifest.refresh(run)
    return m, planned, sweep_section(config)


def report(m: manifest.Manifest, sweep_dir: Path, metric: str | None, x: str | None) -> None:
    """Prints the table, writes ``results.csv`` and the plot of ``metric``."""
    header, rows = results.table(m)
    keep = 2 + len(results.swept_keys(m.runs))
    print(results.format_table(*results.brief(header, rows, keep)))
    results.write_csv(sweep_dir / "results.csv", header, rows)
    print(f"wrote {sweep_dir / 'results.csv'}")
    metric = metric or results.default_metric(m.runs)
    x = x or results.default_x(m.runs)
    if metric is None or x is None:
        print("no plot: needs a numeric summary metric and a numeric swept field")
        return
    path = results.plot(m, metric, sweep_dir / "plots" / f"{metric}.png", x=x)
    print(f"wrote {path} ({metric} against {x})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"--help", "-h", "--helpfull"} & set(argv):
        print(__doc__ + "\nflags:\n" + _define_flags().get_help())
        return 0
    try:
        args, shared = parse_args(argv)
        sweep_dir = Path(args.sweep_dir or default_sweep_dir(args.config)).resolve()
        if args.report:
            m = manifest.load(sweep_dir)
            if m is None:
                raise ConfigError(f"no {manifest.MANIFEST} in {sweep_dir}")
            for run in m.runs:
                manifest.refresh(run)
            manifest.save(sweep_dir, m)
            report(m, sweep_dir, args.metric, args.x)
            return 0
        m, planned, section = plan(args, shared, sweep_dir)
        options = slurm_options(args, section)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    actions = {run.name: manifest.action(run, args.retry_failed) for run in planned}
    jobs = [
        (r, launch.runner_argv(m, r, actions[r.name])) for r in planned if actions[r.name] != "skip"
    ]
    counts = collections.Counter(actions.values())
    print(
        f"{len(planned)} runs in {sweep_dir}: " + ", ".join(f"{n} {a}" for a, n in counts.items())
    )
    if args.dry_run:
        for run in planned:
            print(f"  {actions[run.name]:6s} {run.name} [{run.status}]")
        for _, command in jobs:
            print("  " + shlex.join(command))
        return 0

    manifest.save(sweep_dir, m)
    ended = [0]

    def on_change(run: manifest.Run) -> None:
        manifest.save(sweep_dir, m)
        if run.status in manifest.FINAL or run.status in ("interrupted", "pending"):
            ended[0] += 1
            print(f"[{ended[0]}/{len(jobs)}] {run.name}: {run.status}", flush=True)
        else:
            print(f"  {run.name}: {run.status} ({run.job_id})", flush=True)

    max_parallel = args.max_parallel or section.get("max_parallel")
    try:
        if args.executor == "local":
            run_local(jobs, m.cwd, sweep_dir / "logs", max_parallel or 1, on_change)
        else:
            run_slurm(
                jobs,
                sweep_dir / "slurm",
                options,
                max_parallel or len(jobs),
                on_change,
                cwd=m.cwd,
                log_dir=sweep_dir / "logs",
                poll_s=args.poll,
            )
    except KeyboardInterrupt:
        for run in m.runs:
            manifest.refresh(run)
        manifest.save(sweep_dir, m)
        queued = " (queued Slurm jobs go on; it follows them)" if args.executor == "slurm" else ""
        print(f"interrupted: run the same command again to resume{queued}", file=sys.stderr)
        return 130
    report(m, sweep_dir, args.metric or section.get("metric"), args.x or section.get("x"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
