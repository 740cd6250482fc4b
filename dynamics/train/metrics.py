"""``metrics.jsonl``: one strict JSON object per logged step, flushed, readable after a kill.

Each record is ``{"step": t, "<metric>": value, ...}``; values are Python numbers or lists of
them. A non-finite value (NaN, +-inf) is written as ``null``: JSON has no literal for it (the
``NaN``/``Infinity`` extensions of Python's encoder are rejected by strict readers, ``jq`` and
most other languages). The training loop marks the record of the step whose loss was not finite
with ``"diverged": true``; other records never hold a ``null`` unless a probe returned a
non-finite value. A resumed run first :func:`truncate`\\ s the file to the checkpoint's step so that
records after it, which the resumed run writes again, appear once. TensorBoard event files are
written next to it when asked (tensorboardX).

Example:
  >>> import tempfile, pathlib
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
  >>> with MetricWriter(path) as w:
  ...     _ = w.write({"step": 1, "loss": 0.5, "grad_norm": float("inf")})
  >>> path.read_text()
  '{"step": 1, "loss": 0.5, "grad_norm": null}\\n'
  >>> read_records(path)
  [{'step': 1, 'loss': 0.5, 'grad_norm': None}]
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """``value`` (arrays, NumPy scalars, nested dicts and lists) as plain JSON values.

    Non-finite floats become ``None``, so ``json.dumps(..., allow_nan=False)`` accepts the result.
    """
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, str | bool):
        return value
    value = np.asarray(value)
    if value.ndim:
        return [to_json(v) for v in value.tolist()]
    value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs) -> str:
    """Strict JSON text of ``value`` (see :func:`to_json`); never ``NaN`` or ``Infinity``."""
    return json.dumps(to_json(value), allow_nan=False, **kwargs)


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
        record = to_json(record)
        self._file.write(dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in record.items():
                scalar = isinstance(value, int | float) and not isinstance(value, bool)
                if name != "step" and scalar:
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
    tmp.write_text("".join(dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return records
