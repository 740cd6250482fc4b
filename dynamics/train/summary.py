"""``summary.json``: how a run ended, its final metrics, speed, and where it ran.

Fields: ``status`` (``completed``; ``diverged`` with ``diverged_step`` and ``checkpoint_step``,
the last finite state kept; ``interrupted`` with the ``signal`` that stopped it, at a checkpointed
``step`` that ``--resume`` continues from; or ``failed`` with ``error``), ``step`` (last step
reached), ``final`` (for a completed run the last value of every scalar metric in
``metrics.jsonl``; for a diverged run the values of the diverging step's record alone, ``null``
where not finite, so no value of another step is mixed in) with ``final_step``, ``resumes`` (one
entry per resume: step, UTC time, changed fields), timing (``steps_per_sec`` without the first,
compiling chunk, ``time_to_first_step_sec`` from process start, compilation included,
``wall_time_sec``), ``step_compilations`` (traces of the jitted chunk), ``devices``, ``versions``
of the numerical packages, ``git_commit`` of the source tree (None outside a git checkout), and
``analysis``: what the config's ``analysis.name`` entry of :data:`dynamics.analysis.ANALYSES`
computed from the records. The file is strict JSON: a non-finite number is written as ``null``.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import platform
import subprocess
from typing import Any

import jax

from dynamics.train.metrics import dumps

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


def _is_metric(name: str, value: Any) -> bool:
    scalar = value is None or isinstance(value, int | float) and not isinstance(value, bool)
    return name not in ("step", "diverged") and scalar


def final_metrics(records: list[dict], one_step: bool = False) -> dict[str, Any]:
    """The last logged value of every scalar metric (records in step order).

    With ``one_step`` only the last record's metrics (a diverged run: its values at the diverging
    step, ``None`` where not finite), never values of different steps side by side.
    """
    final = {}
    for record in records[-1:] if one_step else records:
        for name, value in record.items():
            if _is_metric(name, value) and (one_step or value is not None):
                final[name] = value
    return final


def _versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit() -> str | None:
    here = pathlib.Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _devices() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
    }


def build(config, records: list[dict], *, status: str, step: int, **fields) -> dict[str, Any]:
    """The summary of a run that ended with ``status`` at ``step``; ``fields`` are added as is."""
    return {
        "status": status,
        "step": step,
        "num_steps": config.num_steps,
        **fields,
        "final": final_metrics(records, one_step=status == "diverged"),
        "final_step": records[-1]["step"] if records else None,
        "devices": _devices(),
        "mesh": {"data": config.mesh.data, "model": config.mesh.model},
        "versions": _versions(),
        "git_commit": _git_commit(),
    }


def analyze(config, records: list[dict], plots_dir: pathlib.Path) -> dict[str, Any]:
    """``{"analysis": ANALYSES[config.analysis.name](records, config, plots_dir)}`` or ``{}``."""
    if config.analysis.name is None:
        return {}
    from dynamics.analysis import ANALYSES

    plots_dir.mkdir(parents=True, exist_ok=True)
    return {"analysis": ANALYSES.get(config.analysis.name)(records, config, plots_dir)}


def write(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
    """Writes ``summary.json`` atomically (a reader never sees half a file), strict JSON."""
    path = pathlib.Path(workdir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(json.loads(json.dumps(summary, default=str)), indent=2))
    tmp.replace(path)
