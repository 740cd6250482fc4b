"""Second-order regression model: outputs quadratic in the parameters (Agarwala, Pedregosa and
Pennington 2023, "Second-order regression models exhibit progressive sharpening to the edge of
stability").

The paper's model has one output per datum ``alpha = 1..D`` and ``P`` parameters ``theta``:

    z_alpha(theta) = G_alpha . theta + 1/2 theta^T Q_alpha theta,

with fixed random coefficients: ``G`` (the Jacobian at ``theta = 0``) and symmetric ``Q_alpha``
(the constant second derivative). The Jacobian ``J(theta) = G + Q theta`` changes with ``theta``,
which is what lets the NTK ``J J^T`` (and the loss sharpness) move; a linear model (``Q = 0``) has a
constant NTK and shows no progressive sharpening.

Here the datum index is carried by the input: for inputs ``x`` of dimension ``d`` and ``K``
outputs,

    f_k(x; theta) = sum_i x_i (G_ik . theta + 1/2 theta^T Q_ik theta),

so one-hot inputs ``x = e_alpha`` recover the paper's model exactly (``d = D``; the ``synthetic``
dataset's ``kind="one_hot"``), and other inputs mix the per-coordinate quadratics linearly.

Scalings (our choice; the paper states its results for Gaussian coefficients in the large
``P, D`` limit with the quadratic part controlled by one strength parameter):
``G_ikj ~ N(0, 1/P)`` so that ``||G_ik||^2 ~ 1`` (an O(1) NTK), and ``Q_ik = epsilon (A + A^T) /
sqrt(2)`` with ``A_jl ~ N(0, 1/P)`` (a GOE matrix: off-diagonal entries of variance
``epsilon^2 / P``, spectrum in ``[-2 epsilon, 2 epsilon]``), so ``||Q_ik theta|| ~ epsilon
||theta||``: ``epsilon`` is the change of the Jacobian per unit move of the parameters.
``epsilon = 0`` gives the linear (NTK) model. The coefficients come from ``coeff_seed`` (not the
init rng), so they stay fixed across restarts and init seeds. ``theta``
starts at ``N(0, init_scale^2 / P)`` per entry; ``init_scale = 0`` (default) starts at the
expansion point ``theta = 0`` where ``f = 0`` and ``J = G``.

Measured with these choices (50 one-hot data, ``y ~ N(0, 1)``, P = 200, epsilon = 0.5, the ``mse``
loss, full-batch GD at lr 12, 2/lr = 0.167): the top Hessian eigenvalue rises from 0.133 to 0.194
by step 200, then stays between 0.165 and 0.182 from step 400 to 2,000 while the loss keeps falling
non-monotonically (edge of stability); with epsilon = 0 it stays at its initial 0.042.

Memory: the coefficients hold ``d K P (P + 1)`` floats; keep ``P`` and ``d`` small (hundreds).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> spec = DataSpec((50,), "float32", 1)  # 50 one-hot data points, scalar outputs
  >>> model = quadratic(spec, num_params=200, epsilon=0.1)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 50)))
  >>> params["theta"].shape
  (200,)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.models import MODELS, Model
from dynamics.registry import ConfigError

MAX_COEFFICIENTS = 50_000_000


def coefficients(input_dim: int, num_outputs: int, num_params: int, epsilon: float, seed: int):
    """The fixed ``G [d, K, P]`` and symmetric ``Q [d, K, P, P]`` (see the module doc)."""
    rng = np.random.default_rng(seed)
    p = num_params
    g = rng.standard_normal((input_dim, num_outputs, p)) / np.sqrt(p)
    a = rng.standard_normal((input_dim, num_outputs, p, p)) / np.sqrt(p)
    q = epsilon * (a + np.swapaxes(a, -1, -2)) / np.sqrt(2)
    return g.astype(np.float32), q.astype(np.float32)


@MODELS.register("quadratic")
def quadratic(
    spec,
    num_params: int = 100,
    epsilon: float = 0.1,
    coeff_seed: int = 0,
    init_scale: float = 0.0,
) -> Model:
    """The second-order regression model (see the module doc)."""
    d = math.prod(spec.input_shape)
    size = d * spec.num_outputs * num_params * (num_params + 1)
    if size > MAX_COEFFICIENTS:
        raise ConfigError(
            f"model 'quadratic' needs {size:,} coefficients (input size {d} x outputs "
            f"{spec.num_outputs} x num_params {num_params} x (num_params + 1)); "
            f"the limit is {MAX_COEFFICIENTS:,}: lower model.num_params"
        )
    g, q = coefficients(d, spec.num_outputs, num_params, epsilon, coeff_seed)

    def init(rng, x):
        del x
        std = init_scale / math.sqrt(num_params)
        return {"theta": std * jax.random.normal(rng, (num_params,), jnp.result_type(float))}

    def apply(params, x):
        theta = params["theta"]
        gq = jnp.asarray(g, theta.dtype), jnp.asarray(q, theta.dtype)
        per_coordinate = gq[0] @ theta + 0.5 * jnp.einsum("ikjl,j,l->ik", gq[1], theta, theta)
        return x.reshape((x.shape[0], -1)).astype(theta.dtype) @ per_coordinate

    return Model(init, apply)
