"""Run-level analyses: summaries of a finished run computed from its metrics.

A config names one analysis in ``config.analysis.name``; after training, the runner calls

    ANALYSES.get(name)(records, config, plots_dir) -> dict

where ``records`` is the list of metric records of ``metrics.jsonl`` (dicts with a ``"step"`` key,
in step order), ``config`` the run's ``ConfigDict`` and ``plots_dir`` the run's ``plots/`` folder
(a ``pathlib.Path`` that exists) where the analysis may save extra figures. The returned dict
(JSON-serializable) is stored under ``summary.json["analysis"]``. Analyses register themselves
here at import time.

Example:
  >>> @ANALYSES.register("final_loss")
  ... def final_loss(records, config, plots_dir):
  ...     return {"final_loss": records[-1]["loss"]}
"""

from dynamics.registry import Registry

ANALYSES: Registry = Registry("analysis")

# Importing the modules registers their analyses; they import ANALYSES from here, so it comes last.
from dynamics.analysis import eos, grokking, scalar  # noqa: E402, F401
