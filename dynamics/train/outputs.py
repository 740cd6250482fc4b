"""Everything a run writes in its directory, owned by one object: :class:`RunOutputs`.

* ``config.json``: the config of the run, written when it starts; a resume rewrites it with the
  config it continues under and appends to its ``resume_history`` (step, UTC time, the changed
  fields ``[old, new]``, see :mod:`dynamics.train.resume`).
* ``metrics.jsonl`` (:mod:`dynamics.train.metrics`): removed when a run starts afresh, truncated to
  the restored step when it resumes, then appended record by record (flushed).
* ``tensorboard/``: the same records as TensorBoard events when ``config.tensorboard``.
* ``plots/`` (:mod:`dynamics.train.plots`) and the ``analysis`` of ``summary.json``, at the end.
* ``summary.json`` (:mod:`dynamics.train.summary`): how the run ended, with the ``resumes``.

Only process 0 writes; the others keep no records (their summary has an empty ``final``).
:meth:`RunOutputs.start` prints the run directory on stderr (so a log names it from the start).
Nothing is written before it, which the loop calls once the state it starts
from is known (a resume whose checkpoints are all unreadable leaves the directory untouched).

Example:
  >>> import tempfile
  >>> from dynamics.train.config import base_config
  >>> config = base_config()
  >>> config.plots = False
  >>> outputs = RunOutputs(tempfile.mkdtemp(), config, is_main=True)
  >>> outputs.start(0)
  >>> _ = outputs.write({"step": 1, "loss": 0.5})
  >>> outputs.finish(status="completed", step=1)["final"]
  {'loss': 0.5}
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from dynamics.train import metrics, summary
from dynamics.train.resume import HISTORY, Resume, config_record


class RunOutputs:
    """The files of one run in ``workdir`` (see the module docstring)."""

    def __init__(self, workdir, config, *, is_main: bool):
        self.workdir = pathlib.Path(workdir)
        self.config = config
        self.is_main = is_main
        self.records: list[dict] = []
        self.resumes: list[dict] = []
        self.start_step: int | None = None
        self._writer: metrics.MetricWriter | None = None

    @property
    def metrics_path(self) -> pathlib.Path:
        return self.workdir / "metrics.jsonl"

    def start(self, step: int, resume: Resume | None = None) -> None:
        """Starts writing at ``step``: afresh (``resume`` None) or continuing ``resume``."""
        self.start_step = step
        if not self.is_main:
            return
        resumed = f" (resuming at step {step})" if resume is not None else ""
        print(f"run directory: {self.workdir}{resumed}", file=sys.stderr, flush=True)
        if resume is None:
            self.metrics_path.unlink(missing_ok=True)
        else:
            self.records = metrics.truncate(self.metrics_path, step)
            self.resumes = [*resume.history, resume.entry(step)]
        record = config_record(self.config)
        if self.resumes:
            record[HISTORY] = self.resumes
        (self.workdir / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        tensorboard = self.workdir / "tensorboard" if self.config.tensorboard else None
        self._writer = metrics.MetricWriter(self.metrics_path, tensorboard)

    def write(self, record: dict) -> dict:
        """Appends ``record`` (``step`` and metrics); returns it as written (JSON values)."""
        if self._writer is None:
            return metrics.to_json(record)
        record = self._writer.write(record)
        self.records.append(record)
        return record

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, *, status: str, step: int, **fields) -> dict[str, Any]:
        """Closes the records, writes plots, analysis and ``summary.json``; returns the summary."""
        self.close()
        result = summary.build(
            self.config, self.records, status=status, step=step, resumes=self.resumes, **fields
        )
        if self.is_main:
            if self.config.plots:
                from dynamics.train import plots

                plots.plot_run(self.records, self.workdir / "plots")
            result.update(summary.analyze(self.config, self.records, self.workdir / "plots"))
            summary.write(self.workdir, result)
        return result

    def fail(self, error: BaseException) -> None:
        """Writes the ``failed`` summary of a run that raised ``error``."""
        self.close()
        if not self.is_main:
            return
        records = self.records or metrics.read_records(self.metrics_path)
        step = records[-1]["step"] if records else self.start_step or 0
        failed = summary.build(self.config, records, status="failed", step=step, error=repr(error))
        failed["resumes"] = self.resumes
        summary.write(self.workdir, failed)
