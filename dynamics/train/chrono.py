"""The run's clock and its progress report (big_vision's ``chrono`` is the model).

:class:`Chrono` is told when each chunk of steps has finished (after the host has synced on it)
and derives:

* ``time_to_first_step_sec``: process start to the end of the first chunk, which the loop makes a
  single step, so it is compilation plus one step;
* ``steps_per_sec``: the steps after the first chunk over the time they took (compilation left
  out); a run that never got past its first chunk falls back to all its steps over the wall time;
* ``wall_time_sec``: process start to now.

It also reports progress: a tqdm bar on a terminal; otherwise (a Slurm log, a pipe, CI) one line
on stderr each time the run crosses another ``1 / lines`` of its steps (``lines=0``: none),
``progress: step 300/1000 (30%), loss 0.2718, 812.3 steps/s``, from values the loop already has
on the host (no extra device sync).

Example:
  >>> import io
  >>> chrono = Chrono(start_time=0.0, step=0, num_steps=100, bar=False, stream=io.StringIO())
  >>> chrono.chunk_done(1, now=2.0)  # compilation + one step
  >>> chrono.report()
  >>> chrono.chunk_done(51, now=3.0)  # 50 steps in one second
  >>> chrono.report(loss=0.5)
  >>> chrono.stream.getvalue()
  'progress: step 51/100 (51%), loss 0.5, 50 steps/s\\n'
  >>> chrono.timing(now=4.0)["steps_per_sec"], chrono.timing(now=4.0)["time_to_first_step_sec"]
  (50.0, 2.0)
"""

from __future__ import annotations

import math
import sys
import time

import tqdm


class Chrono:
    """Timing and progress of one run from ``step`` (0, or the resumed step) to ``num_steps``."""

    def __init__(
        self,
        start_time: float,
        step: int,
        num_steps: int,
        *,
        bar: bool,
        lines: int = 10,
        stream=None,
    ):
        self.start_time = start_time
        self.start_step = step
        self.num_steps = num_steps
        self.stream = sys.stderr if stream is None else stream
        self.first_step_time: float | None = None
        self._measure = None  # (time, step) at the end of the first chunk
        self._last = None  # (time, step) at the end of the latest chunk
        self._loss: float | None = None  # the latest logged loss
        self._lines = lines
        self._next_line = self._line_after(step) if lines else math.inf
        self._bar = tqdm.tqdm(total=num_steps, initial=step, dynamic_ncols=True) if bar else None

    def _line_after(self, step: int) -> int:
        k = step * self._lines // self.num_steps + 1
        return -(-k * self.num_steps // self._lines)  # ceil(k * num_steps / lines)

    def chunk_done(self, step: int, now: float | None = None) -> None:
        """The chunk ending at ``step`` has finished (call right after the host synced on it)."""
        now = time.perf_counter() if now is None else now
        if self.first_step_time is None:
            self.first_step_time = now - self.start_time
            self._measure = (now, step)
        if self._bar is not None:
            self._bar.update(step - (self._last[1] if self._last else self.start_step))
        self._last = (now, step)

    def report(self, loss: float | None = None) -> None:
        """Shows the progress after the latest chunk; ``loss`` is its logged loss if any."""
        if loss is not None:
            self._loss = loss
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        step = self._last[1]
        if self._bar is None and step >= self._next_line:
            self._next_line = self._line_after(step)
            self._print_line(step)

    def _print_line(self, step: int) -> None:
        text = f"progress: step {step}/{self.num_steps} ({100 * step // self.num_steps}%)"
        if self._loss is not None:
            text += f", loss {self._loss:.4g}"
        rate = self.steps_per_sec()
        if rate is not None:
            text += f", {rate:.4g} steps/s"
        print(text, file=self.stream, flush=True)

    def steps_per_sec(self) -> float | None:
        """Steps per second after the first chunk, None before a second chunk has finished."""
        if self._measure is None or self._last[1] <= self._measure[1]:
            return None
        return (self._last[1] - self._measure[1]) / (self._last[0] - self._measure[0])

    def timing(self, now: float | None = None) -> dict[str, float | None]:
        """``time_to_first_step_sec``, ``steps_per_sec`` and ``wall_time_sec`` for the summary."""
        now = time.perf_counter() if now is None else now
        rate = self.steps_per_sec()
        if rate is None:
            step = self._last[1] if self._last else self.start_step
            rate = (step - self.start_step) / (now - self.start_time)
        return {
            "time_to_first_step_sec": self.first_step_time,
            "steps_per_sec": rate,
            "wall_time_sec": now - self.start_time,
        }

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
