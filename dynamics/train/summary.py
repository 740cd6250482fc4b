"""``summary.json``: how a run ended, its final metrics, speed, and where it ran.

Fields: ``status`` (``completed``, ``diverged`` with ``diverged_step``, or ``failed`` with
``error``), ``step`` (last step reached), ``final`` (the last value of every scalar metric in
``metrics.jsonl``), timing (``steps_per_sec`` without the first, compiling chunk,
``time_to_first_step_sec`` from process start, compilation included, ``wall_time_sec``),
``devices``, ``versions`` of the numerical packages, ``git_commit`` of the source tree (None
outside a git checkout), and ``analysis``: what the config's ``analysis.name`` entry of
:data:`dynamics.analysis.ANALYSES` computed from the records.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import platform
import subprocess
from typing import Any

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


def final_metrics(records: list[dict]) -> dict[str, Any]:
    """The last logged value of every scalar metric (records in step order)."""
    final = {}
    for record in records:
        for name, value in record.items():
            if name != "step" and isinstance(value, int | float):
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
        "final": final_metrics(records),
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
    """Writes ``summary.json`` atomically (a reader never sees half a file)."""
    path = pathlib.Path(workdir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
