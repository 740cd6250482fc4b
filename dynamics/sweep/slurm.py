"""The Slurm executor: every run one task of a submitit job array, followed until all end.

The runs are submitted as one job array (``sbatch --array``, at most ``max_parallel`` running at
once) through submitit; each array task is a :class:`dynamics.sweep.requeue.RunnerTask`, which
runs ``python -m experiments.run`` and returns its exit code, and on preemption requeues the job
to resume the run from its checkpoint. Jobs with several tasks (``nodes`` x
``ntasks_per_node`` > 1) run the runner once per task, and the runner joins them into one JAX
program through ``jax.distributed`` (Slurm's environment names the coordinator).

Following the jobs needs only ``squeue``: a job is done when it has left the queue; its exit code
is in submitit's result file, and a job that left none was killed, timed out or cancelled (the run
is ``interrupted`` and a re-run resumes it). ``sacct`` is not needed, so clusters without
accounting work too. A re-run of the sweep while its jobs are still queued follows those jobs
instead of submitting the runs again.

Example:
  >>> opts = SlurmOptions(partition="gpu", time_min=120, gpus_per_task=1, sbatch={"qos": "high"})
  >>> run_slurm(jobs, "sweep/slurm", opts, max_parallel=8, on_change=print)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import getpass
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from dynamics.sweep.manifest import Run, finish, log_path
from dynamics.sweep.requeue import RunnerTask


@dataclasses.dataclass
class SlurmOptions:
    """Resources of every job; ``sbatch`` holds extra ``#SBATCH --key=value`` lines."""

    partition: str | None = None
    time_min: int = 60
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int | None = None
    gpus_per_task: int | None = None
    mem: str | None = None
    sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)

    def submitit_parameters(self) -> dict[str, Any]:
        params = dict(
            partition=self.partition,
            time=self.time_min,
            nodes=self.nodes,
            ntasks_per_node=self.ntasks_per_node,
            cpus_per_task=self.cpus_per_task,
            gpus_per_task=self.gpus_per_task or None,
            mem=self.mem,
            additional_parameters=dict(self.sbatch),
        )
        return {k: v for k, v in params.items() if v is not None}


def queue_states() -> dict[str, str] | None:
    """``{job_id: state}`` of this user's queued jobs (array tasks one by one); None if unknown."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def _returncode(job: submitit.Job) -> int | None:
    """The runner's exit code from task 0 of a job that left the queue; None if it left none.

    The result file is checked first: submitit's ``result()`` would otherwise wait on ``sacct``.
    """
    if not job.paths.result_pickle.exists():
        return None
    try:
        return int(job.result())
    except Exception:  # the task itself raised (e.g. could not start Python): a failed run
        return 1


def run_slurm(
    jobs: Sequence[tuple[Run, list[str]]],
    folder: str | Path,
    options: SlurmOptions,
    max_parallel: int,
    on_change: Callable[[Run], None],
    cwd: str,
    log_dir: str | Path,
    poll_s: float = 5.0,
) -> None:
    """Submits (or re-attaches to) every ``(run, argv)`` and returns when all have ended."""
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(
        job_name="sweep", array_parallelism=max(1, max_parallel), **options.submitit_parameters()
    )
    queued = queue_states() or {}
    followed: dict[str, tuple[Run, submitit.Job]] = {}
    to_submit = []
    for run, argv in jobs:
        if run.job_id in queued:
            followed[run.job_id] = (run, submitit.SlurmJob(folder, run.job_id))
        else:
            to_submit.append((run, argv))
    if to_submit:
        submitted = executor.map_array(
            RunnerTask(),
            [argv for _, argv in to_submit],
            [cwd] * len(to_submit),
            [str(log_path(log_dir, run)) for run, _ in to_submit],
        )
        for (run, _), job in zip(to_submit, submitted, strict=True):
            run.status, run.job_id, run.returncode = "queued", job.job_id, None
            # Task 0 of the array element: its result file holds the runner's exit code.
            followed[job.job_id] = (run, submitit.SlurmJob(folder, job.job_id))
            on_change(run)

    failures = 0
    while followed:
        time.sleep(poll_s)
        states = queue_states()
        if states is None:
            # A busy controller refuses some queries; one that never answers is an outage, and
            # the re-run after it follows the same jobs.
            failures += 1
            if failures * poll_s > 1800:
                raise RuntimeError("squeue has failed for 30 minutes; re-run the sweep later")
            continue
        failures = 0
        for job_id, (run, job) in list(followed.items()):
            if job_id not in states:
                del followed[job_id]
                on_change(finish(run, _returncode(job), log_path(log_dir, run)))
            elif states[job_id] == "RUNNING" and run.status != "running":
                run.status = "running"
                on_change(run)
