"""Registries of update rules, so that configs can name them.

Three kinds of optax transforms are composed by the runner as
``chain(filter, optimizer, constraint)``:

* ``OPTIMIZERS``: full update rules, called as ``fn(learning_rate, **kwargs)`` where
  ``learning_rate`` is a float or an optax schedule (the optax alias convention).
* ``FILTERS``: gradient transforms applied before the optimizer (Grokfast, orthogonal gradient,
  sharpness-aware perturbations), called as ``fn(**kwargs)``.
* ``CONSTRAINTS``: transforms applied after the optimizer that keep the parameters in a set
  (spectral normalization and caps), called as ``fn(**kwargs)``.

Every transform that wants the loss gradient at another point (SAM and its relatives) receives it
as the keyword extra argument ``grad_fn(params) -> grads`` and, for flooding, the current loss as
``loss=``; the runner always passes both.
"""

from __future__ import annotations

import optax

from dynamics.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
FILTERS: Registry = Registry("gradient filter")
CONSTRAINTS: Registry = Registry("constraint")


@OPTIMIZERS.register("sgd")
def sgd(learning_rate):
    """Plain gradient descent: p <- p - lr g."""
    return optax.sgd(learning_rate)


@OPTIMIZERS.register("momentum")
def momentum(learning_rate, momentum=0.9):
    """Heavy ball: m <- b m + g, p <- p - lr m (stability threshold (2 + 2b)/lr)."""
    return optax.sgd(learning_rate, momentum=momentum)


@OPTIMIZERS.register("nesterov")
def nesterov(learning_rate, momentum=0.9):
    """Nesterov momentum in optax's form: p <- p - lr (g + b m)."""
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


@OPTIMIZERS.register("adam")
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


@OPTIMIZERS.register("adamw")
def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4):
    """AdamW: Adam with decoupled weight decay p <- p - lr wd p."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(learning_rate, decay=0.9, eps=1e-8):
    """RMSProp as in optax: v <- d v + (1 - d) g^2, p <- p - lr g / sqrt(v + eps)."""
    return optax.rmsprop(learning_rate, decay=decay, eps=eps)
