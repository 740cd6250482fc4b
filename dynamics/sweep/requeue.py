"""What a Slurm array task runs: the runner, requeued with ``--resume`` when the job is preempted.

:class:`RunnerTask` is a ``submitit.helpers.Checkpointable``: submitit calls its
:meth:`~RunnerTask.checkpoint` when the job is about to be stopped and requeues the job with the
``DelayedSubmission`` it returns, which reruns the same runner command with ``--resume`` (and
without ``--overwrite``) in the same workdir, so the run carries on from its last checkpoint.
The job keeps its id, so a sweep that follows it sees it queued again and then ending.

A job hears of its end in one of two ways, and both end in that requeue:

* submitit's signal (``SIGUSR2``, sent by Slurm ``signal_delay_s`` before the time limit or on a
  preemption that signals first): the runner ignores it (it would kill it), and ``checkpoint``
  sends the runner ``SIGTERM`` and waits for it to exit before returning;
* ``SIGTERM`` sent to the job's processes (a preemption, ``scancel --signal=TERM``): the runner
  gets it directly, writes a checkpoint and exits with 143 (128 + SIGTERM; ``-15`` if it was
  killed by the signal before it could). While the job is still ``RUNNING`` in the queue (not
  cancelled, not past its time limit), the task then raises submitit's signal on itself, so the
  requeue goes through submitit's own handler.

Only task 0 of a job requeues (submitit's rule); the other tasks of a multi-process run just end.

Example:
  >>> resume_argv(["python", "-m", "experiments.run", "--workdir=w", "--overwrite"])
  ['python', '-m', 'experiments.run', '--workdir=w', '--resume']
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

import submitit

from dynamics.sweep.launch import popen

STOPPED = (128 + signal.SIGTERM, -signal.SIGTERM)


def resume_argv(argv: Sequence[str]) -> list[str]:
    """The runner command that continues the run ``argv`` started, from its checkpoint."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return kept + ["--resume"]


def _preempt_signal() -> signal.Signals:
    """submitit's requeue signal (``SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]


def _job_running() -> bool:
    """Whether this job is still RUNNING in the queue (False once cancelled or timed out)."""
    job = submitit.JobEnvironment().job_id
    try:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return state == ["RUNNING"]


class RunnerTask(submitit.helpers.Checkpointable):
    """``task(argv, cwd, log)`` runs the runner ``argv`` in ``cwd`` and returns its exit code.

    In a job with several tasks every task runs the runner (one JAX process each) and appends to
    its own log ``log.<SLURM_PROCID>``.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"_proc": None}  # the runner process is this job's; a requeued job starts its own

    def __call__(self, argv: Sequence[str], cwd: str, log: str) -> int:
        if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
            log = f"{log}.{os.environ.get('SLURM_PROCID', '0')}"
        sig = _preempt_signal()
        # Ignored dispositions survive exec: the runner does not die of submitit's signal.
        self._proc = popen(argv, cwd, log, preexec_fn=lambda: signal.signal(sig, signal.SIG_IGN))
        # Polled, not ``wait()``ed: a blocking wait holds the Popen's lock, and submitit's handler
        # (which calls ``checkpoint``, which waits for the runner) runs in this thread.
        while (code := self._proc.poll()) is None:
            time.sleep(0.5)
        if code in STOPPED and os.environ.get("SLURM_PROCID", "0") == "0" and _job_running():
            os.kill(os.getpid(), sig)  # submitit's handler: checkpoint(), requeue, exit
            time.sleep(60)  # not reached unless the handler could not requeue
        return code

    def checkpoint(self, argv: Sequence[str], cwd: str, log: str):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait()
        return submitit.helpers.DelayedSubmission(RunnerTask(), resume_argv(argv), cwd, log)
