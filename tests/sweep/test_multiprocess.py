"""One run as two JAX processes on localhost gives the metrics of the same run in one process.

Both runs use the same config with a 2-device data mesh: once as one process with 2 CPU devices,
once as 2 processes with 1 CPU device each, joined by ``jax.distributed`` through a localhost
coordinator (``--coordinator_address/--num_processes/--process_id``). Each process feeds its half
of every minibatch; only process 0 writes the run directory.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = "tests/sweep/tiny_config.py"
TIMING = ("sec", "time")


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(workdir, devices, *flags):
    # Each process sees `devices` CPU devices: the test session's XLA_FLAGS (8 devices) is replaced.
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    argv = [sys.executable, "-m", "experiments.run", f"--config={CONFIG}", f"--workdir={workdir}"]
    argv += ["--config.mesh.data=2", *flags]
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(procs):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=900)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    coordinator = f"--coordinator_address=localhost:{free_port()}"
    procs = [start(one, 2)]
    procs += [
        start(two, 1, coordinator, "--num_processes=2", f"--process_id={i}") for i in range(2)
    ]
    finish(procs)

    summaries = [json.loads((w / "summary.json").read_text()) for w in (one, two)]
    assert [s["devices"]["process_count"] for s in summaries] == [1, 2]
    assert [s["devices"]["count"] for s in summaries] == [2, 2]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    a, b = records(one), records(two)
    # Only process 0 writes: one record per logged step, not two.
    assert [r["step"] for r in b] == [r["step"] for r in a]
    assert len({r["step"] for r in b}) == len(b) >= 5
    compared = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key, va in ra.items():
            if isinstance(va, float) and not any(t in key for t in TIMING):
                assert math.isclose(va, rb[key], rel_tol=1e-5, abs_tol=1e-9), (ra["step"], key)
                compared += 1
    assert compared > 20
    assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == [
        "10",
        "20",
    ]
