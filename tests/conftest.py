"""Test session setup: 8 simulated CPU devices, so sharding tests run on one machine.

XLA reads the flag when JAX initializes its backend, so it is set before anything imports jax.
Single-device code is unaffected: arrays live on device 0 unless a test asks for a mesh.
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
