"""The local executor: runs as subprocesses on this machine, at most ``max_parallel`` at a time.

Each run is an independent ``python -m experiments.run`` process, so a crash, a divergence or an
out-of-memory kill ends that run only. On interruption (Ctrl-C) the running children are
terminated and left as ``interrupted``: the next invocation resumes them from their checkpoints.

Example:
  >>> run_local(jobs, "/repo", "sweep/logs", max_parallel=2, on_change=print)  # doctest: +SKIP
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dynamics.sweep.launch import popen
from dynamics.sweep.manifest import Run, finish, log_path


def _stop(procs: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_local(
    jobs: Sequence[tuple[Run, list[str]]],
    cwd: str,
    log_dir: str | Path,
    max_parallel: int,
    on_change: Callable[[Run], None],
    poll_s: float = 0.2,
) -> None:
    """Runs every ``(run, argv)`` and calls ``on_change(run)`` when it starts and when it ends."""
    queue = list(jobs)
    active: dict[subprocess.Popen, Run] = {}
    try:
        while queue or active:
            while queue and len(active) < max(1, max_parallel):
                run, argv = queue.pop(0)
                proc = popen(argv, cwd, log_path(log_dir, run))
                run.status, run.job_id, run.returncode = "running", f"local:{proc.pid}", None
                active[proc] = run
                on_change(run)
            for proc in [p for p in active if p.poll() is not None]:
                run = active.pop(proc)
                on_change(finish(run, proc.returncode, log_path(log_dir, run)))
            time.sleep(poll_s)
    finally:
        _stop(list(active))
