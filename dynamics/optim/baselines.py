"""The optax aliases a config can name directly, with the keyword arguments configs use.

Plain wrappers of ``optax.sgd``, ``optax.adam``, ``optax.adamw`` and ``optax.rmsprop``; the one
rule of their own is ``adam``'s *coupled* L2 (the decay enters the moments, as in
``torch.optim.Adam``). Their stability thresholds and preconditioners are listed with them in
:mod:`dynamics.optim.registry`.

Example:
  >>> import jax.numpy as jnp
  >>> tx = momentum(0.1, momentum=0.9)
  >>> u, _ = tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
  >>> [round(float(x), 6) for x in u]
  [-0.1, -0.1]
"""

from __future__ import annotations

import optax


def sgd(learning_rate):
    """Plain gradient descent: p <- p - lr g."""
    return optax.sgd(learning_rate)


def momentum(learning_rate, momentum=0.9):
    """Heavy ball: m <- b m + g, p <- p - lr m (stability threshold (2 + 2b)/lr)."""
    return optax.sgd(learning_rate, momentum=momentum)


def nesterov(learning_rate, momentum=0.9):
    """Nesterov momentum in optax's form: p <- p - lr (g + b m)."""
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=0.0):
    """Adam with *coupled* L2 as in ``torch.optim.Adam``: the decay enters the moments.

    ``eps_root`` is added to ``nu`` inside the square root (optax's option): with it the step is
    differentiable where ``nu = 0`` (parameters that never received a gradient), which the
    step-map Jacobian of ``dynamics.curvature.step_stability`` needs.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root),
    )


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4):
    """AdamW: Adam with decoupled weight decay p <- p - lr wd p."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def rmsprop(learning_rate, decay=0.9, eps=1e-8):
    """RMSProp as in optax: v <- d v + (1 - d) g^2, p <- p - lr g / sqrt(v + eps)."""
    return optax.rmsprop(learning_rate, decay=decay, eps=eps)
