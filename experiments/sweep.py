r"""Run a sweep of one config locally or on Slurm; re-running the same command carries it on.

    python -m experiments.sweep --config=configs/NAME.py[:preset] --executor=local|slurm \
        [--max-parallel=N] [--sweep-dir=DIR] [--limit=N] [--dry-run] [--retry-failed] \
        [--metric=NAME] [--x=FIELD] [--config.a.b=value ...]
    python -m experiments.sweep --sweep-dir=DIR --report [--metric=NAME] [--x=FIELD]

The runs are the override dicts of the config file's ``get_sweep(preset)`` (one run without it);
``--config.a.b=value`` applies to every run. Each run is ``python -m experiments.run`` in
``DIR/<name from its overrides>`` with its log in ``DIR/logs/``; ``DIR/sweep.json`` records every
run. Re-running skips completed and diverged runs, resumes interrupted ones from their checkpoints
and retries failed ones only with ``--retry-failed``. A failing or diverging run never stops the
others. At the end the table of every run (status, swept values, summary metrics) is printed and
written to ``DIR/results.csv``, and ``--metric`` (default: ``final.loss``, else the first numeric
summary metric) is plotted against ``--x`` (default: the first numeric swept field) in
``DIR/plots/``. ``--report`` rebuilds table and plot from the manifest alone.

Slurm settings come from flags or from the config's ``sweep`` section (flags win)::

    config.sweep = dict(partition="gpu", time_min=240, gpus_per_task=1, cpus_per_task=8,
                        mem="32G", sbatch={"account": "my-lab"}, max_parallel=16,
                        metric="final_sharpness", x="optimizer.learning_rate")

Exit codes: 0 when every run has ended (whatever its status), 2 for an invalid config or sweep,
130 when interrupted (re-run the command to resume).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

from dynamics.registry import ConfigError
from dynamics.sweep import launch, manifest, naming, results
from dynamics.sweep.local import run_local
from dynamics.sweep.slurm import SlurmOptions, run_slurm

SLURM_FIELDS = [f for f in SlurmOptions.__dataclass_fields__]
SECTION_FIELDS = {*SLURM_FIELDS, "max_parallel", "metric", "x"}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m experiments.sweep", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--config", help="FILE[:preset] with get_config(arg) and get_sweep(arg)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--max-parallel", type=int, help="runs at once (local: 1, slurm: all)")
    p.add_argument("--sweep-dir", help="default: runs/sweeps/<config name>[-<preset>]")
    p.add_argument("--limit", type=int, help="keep only the first N runs (a quick trial)")
    p.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")
    p.add_argument("--retry-failed", action="store_true", help="start failed runs again")
    p.add_argument("--report", action="store_true", help="table and plot from sweep.json only")
    p.add_argument("--metric", help="summary metric to plot (default: final.loss)")
    p.add_argument("--x", help="swept field on the plot's x axis (default: first numeric one)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between Slurm queue checks")
    slurm = p.add_argument_group("slurm (override the config's sweep section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time-min", type=int, help="time limit of each run in minutes")
    slurm.add_argument("--nodes", type=int)
    slurm.add_argument("--ntasks-per-node", type=int, help="JAX processes per node (GPUs/node)")
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--gpus-per-task", type=int)
    slurm.add_argument("--mem", help="memory per node, e.g. 32G")
    slurm.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra #SBATCH line"
    )
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)} (overrides are --config.FIELD=VALUE)")
    if not args.report and not args.config:
        p.error("--config is required (or --report with --sweep-dir)")
    if args.report and not (args.sweep_dir or args.config):
        p.error("--report needs --sweep-dir (or the --config that names it)")
    return args, rest


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


def slurm_options(args: argparse.Namespace, section: dict) -> SlurmOptions:
    values = {k: section[k] for k in SLURM_FIELDS if k in section}
    flags = [k for k in SLURM_FIELDS if k != "sbatch" and getattr(args, k) is not None]
    values.update({k: getattr(args, k) for k in flags})
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
    launch.check_runs(config, overrides, shared)
    spec = launch.absolute_config(args.config)
    m = manifest.load(sweep_dir)
    if m is None:
        m = manifest.Manifest(config=spec, overrides=shared, cwd=os.getcwd())
    elif (m.config, m.overrides) != (spec, shared):
        raise ConfigError(
            f"{sweep_dir} holds a sweep of {m.config} with overrides {m.overrides}; "
            "use another --sweep-dir for a different config or overrides"
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
    args, shared = parse_args(sys.argv[1:] if argv is None else argv)
    try:
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
        for _, argv in jobs:
            print("  $ " + " ".join(argv[1:]))
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
