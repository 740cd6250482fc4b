"""``metrics.jsonl``: one JSON object per logged step, flushed as it goes, readable after a kill.

Each record is ``{"step": t, "<metric>": value, ...}``; values are Python floats (NaN and inf
are written as JSON's ``NaN``/``Infinity`` extensions, which :func:`read_records` reads back).
A resumed run first :func:`truncate`\\ s the file to the checkpoint's step so that records after
it, which the resumed run writes again, appear once. TensorBoard event files are written next to
it when asked (tensorboardX).

Example:
  >>> import tempfile, pathlib
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
  >>> with MetricWriter(path) as w:
  ...     _ = w.write({"step": 1, "loss": 0.5})
  >>> read_records(path)
  [{'step': 1, 'loss': 0.5}]
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np


def _to_python(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_python(v) for v in value]
    value = np.asarray(value)
    if value.ndim:
        return value.tolist()
    return value.item()


class MetricWriter:
    """Appends records to ``metrics.jsonl`` (and TensorBoard event files in ``tensorboard_dir``)."""

    def __init__(self, path, tensorboard_dir=None):
        self.path = pathlib.Path(path)
        self._file = open(self.path, "a")  # noqa: SIM115 -- closed in close()
        self._tb = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> dict:
        """Writes one record (``step`` and metrics) and flushes it; returns it as written."""
        record = _to_python(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(name, value, record["step"])
            self._tb.flush()
        return record

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path) -> list[dict]:
    """The records of a ``metrics.jsonl``, skipping a last line cut short by a kill."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate(path, step: int) -> list[dict]:
    """Keeps only the records with ``step <= step`` (atomically); returns them."""
    path = pathlib.Path(path)
    records = [r for r in read_records(path) if r["step"] <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return records
