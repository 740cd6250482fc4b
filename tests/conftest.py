"""Test session setup: 8 simulated CPU devices, so sharding tests run on one machine.

XLA reads the flag when JAX initializes its backend, so it is set before anything imports jax.
Single-device code is unaffected: arrays live on device 0 unless a test asks for a mesh.
"""

import os
import tempfile

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

# Many tests (and the runs they start as subprocesses) compile the same small programs; XLA's
# persistent cache lets them share the compiled code. Results are unaffected: a hit returns the
# executable the same compilation would have produced.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "dynamics-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# The suite runs two pytest workers plus the runs they start on two cores; OpenBLAS's own thread
# pool (NumPy's and the LAPACK behind JAX's CPU eigh/svd/qr) then spins against the other
# processes: three 128 x 128 SVDs took 3.0 s under that load and 6.7 ms single-threaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
