"""The sweep manifest ``SWEEP_DIR/sweep.json`` and what a re-run does with each run.

The manifest records how the sweep was launched (config, overrides shared by every run, working
directory) and one entry per run: its overrides, workdir, status, scheduler job id, the runner's
exit code and the run's ``summary.json``. It is rewritten atomically after every change, so it is
never half-written when the sweep is interrupted.

A run's ``summary.json`` is the source of truth for its outcome; the manifest only adds what the
run cannot know (it never started, it died before writing a summary, its job id). Statuses:

* ``completed`` / ``diverged`` / ``failed``: final, from ``summary.json`` (``failed`` also when the
  runner exited non-zero without a summary);
* ``pending``: no workdir yet; ``interrupted``: a workdir without a final summary (killed, timed
  out, preempted); ``running``: handed to an executor by the sweep now in progress.

What a re-run does (:func:`action`): skip completed and diverged runs, resume interrupted ones from
their checkpoints, start pending ones, and retry failed ones from scratch only when asked.

Example:
  >>> m = Manifest(config="configs/c.py", overrides=[], cwd="/repo")
  >>> m.runs.append(Run(name="seed=0", overrides={"seed": 0}, workdir="/tmp/never/seed=0"))
  >>> action(refresh(m.runs[0]), retry_failed=False)
  'start'
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

FINAL = ("completed", "diverged", "failed")
MANIFEST = "sweep.json"
RUNNER_FLAGS = {"start": [], "resume": ["--resume"], "retry": ["--overwrite"]}


@dataclasses.dataclass
class Run:
    name: str
    overrides: dict[str, Any]
    workdir: str
    status: str = "pending"
    job_id: str | None = None
    returncode: int | None = None
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    reason: str | None = None


@dataclasses.dataclass
class Manifest:
    config: str
    overrides: list[str]
    cwd: str
    runs: list[Run] = dataclasses.field(default_factory=list)

    def run(self, name: str) -> Run | None:
        return next((r for r in self.runs if r.name == name), None)


def load(sweep_dir: str | os.PathLike) -> Manifest | None:
    """The manifest of ``sweep_dir``, or None if there is none yet."""
    path = Path(sweep_dir) / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    runs = [Run(**r) for r in data.pop("runs")]
    return Manifest(**data, runs=runs)


def save(sweep_dir: str | os.PathLike, manifest: Manifest) -> None:
    """Writes the manifest atomically (a reader sees the old or the new file, never a torn one)."""
    path = Path(sweep_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(manifest), indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``summary.json``, or None if it is missing or unreadable (being written)."""
    try:
        return json.loads((Path(workdir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def refresh(run: Run) -> Run:
    """Updates ``run.status`` and ``run.summary`` from its workdir; returns ``run``."""
    summary = read_summary(run.workdir)
    if summary is not None and summary.get("status") in FINAL:
        run.status, run.summary = summary["status"], summary
    elif run.status == "failed":
        pass  # the runner exited non-zero before writing a summary; only --retry_failed reruns it
    else:
        run.status = "interrupted" if Path(run.workdir).exists() else "pending"
    return run


def action(run: Run, retry_failed: bool) -> str:
    """``skip``, ``start``, ``resume`` or ``retry`` for a refreshed run (keys of RUNNER_FLAGS)."""
    if run.status in ("completed", "diverged"):
        return "skip"
    if run.status == "failed":
        return "retry" if retry_failed else "skip"
    return "resume" if run.status == "interrupted" else "start"


def log_path(log_dir: str | os.PathLike, run: Run) -> Path:
    """Where the runner's output of ``run`` goes (task ``i`` of a multi-task job: ``.i`` added)."""
    return Path(log_dir) / f"{run.name}.log"


def last_line(log: str | os.PathLike, limit: int = 300) -> str | None:
    """The last non-empty line of a log (at most ``limit`` characters), or None without one."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    line = next((line.strip() for line in reversed(lines) if line.strip()), None)
    return line if line is None or len(line) <= limit else line[: limit - 3] + "..."


# The runner's exit codes after it checkpointed on SIGTERM / SIGINT (128 + the signal number).
INTERRUPTED_CODES = (143, 130)


def finish(run: Run, returncode: int | None, log: str | os.PathLike | None = None) -> Run:
    """Records the end of a run's process; returns ``run``.

    The status is the summary's if the run wrote a final one, else ``interrupted`` when the runner
    stopped on SIGTERM/SIGINT with its checkpoint written (exit 143 / 130 and an ``interrupted``
    summary) or the process vanished (killed, timed out, preempted), both of which a re-run
    resumes, else ``failed`` for any other exit code. A failed run's ``reason`` is the last line
    of its ``log`` (the runner's one-line error, or the last line of a traceback).
    """
    run.returncode = returncode
    refresh(run)
    stopped = (
        returncode in INTERRUPTED_CODES
        and (read_summary(run.workdir) or {}).get("status") == "interrupted"
    )
    if run.status not in FINAL and returncode is not None and not stopped:
        run.status = "failed"
    if run.status == "failed" and log is not None:
        run.reason = last_line(log) or last_line(f"{log}.0")
    else:
        run.reason = None
    return run
