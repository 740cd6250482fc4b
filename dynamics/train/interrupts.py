"""SIGTERM and SIGINT as a request to stop between two chunks of steps.

Clusters preempt a job with SIGTERM (Slurm, Kubernetes, TPU maintenance) and a user stops a run
with Ctrl-C (SIGINT). Inside :class:`Interrupts` either signal only records itself: the training
loop reads :attr:`Interrupts.signum` between chunks, where it already waits for the device, so
the chunk in flight finishes, a checkpoint is written at that step and the run ends with status
``interrupted``; nothing is added to the loop's hot path. The handler puts the previous one back,
so a second signal acts as it would have without this (Ctrl-C twice: ``KeyboardInterrupt``).

Handlers can only be installed from the main thread; elsewhere (and where ``enabled`` is False:
a run over several processes, which would have to agree on the step to stop at) the signals keep
their default action and a stopped run resumes from its last periodic checkpoint instead.

Example:
  >>> import os, signal
  >>> with Interrupts() as interrupts:
  ...     os.kill(os.getpid(), signal.SIGTERM)
  ...     interrupts.name
  'SIGTERM'
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupts:
    """Context manager: ``signum`` is None until SIGTERM or SIGINT arrives, then its number."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        del frame
        self.signum = signum
        signal.signal(signum, self._previous[signum])

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self) -> Interrupts:
        if self.enabled:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
