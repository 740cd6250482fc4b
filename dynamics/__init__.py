"""dynamics: training dynamics in JAX.

Subpackages, each usable on its own:

* ``dynamics.optim``: update rules as optax transforms (Muon family, Shampoo/SOAP/Kron/SPlus,
  SAM/ASAM/gradient-norm regularization, Grokfast and orthogonal-gradient filters).
* ``dynamics.curvature``: matrix-free Hessian linear algebra on parameter pytrees.
* ``dynamics.models``, ``dynamics.data``, ``dynamics.losses``: the pieces experiments are made of.
* ``dynamics.train``: the config-driven training loop behind ``python -m experiments.run``.
"""

__version__ = "0.1.0"
