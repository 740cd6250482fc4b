"""Linear stability of one full optimizer step, in the optimizer's own geometry.

An optimizer step is a map s' = F(s) of the whole training state s = (params, opt_state). Near the
current point a perturbation evolves as ds' = J ds with J = dF/ds, so the step is locally stable
when the spectral radius rho(J) <= 1; crossing 1 is the edge of stability of *that* optimizer (GD:
J = I - lr H, rho = max_i |1 - lr lambda_i|, so rho > 1 iff lambda_max > 2/lr; heavy ball: the
2x2 companion blocks cross 1 at lambda = (2 + 2b)/lr; Adam, Muon, SOAP with their states alike).
J is not symmetric, so its largest-magnitude eigenvalues come from Arnoldi iteration (Saad 2011,
"Numerical methods for large eigenvalue problems", ch. 6) on Jacobian-vector products obtained
with ``jax.linearize`` through the step (one forward pass, then one tangent pass per product).

Only floating-point leaves of the state are perturbed; integer leaves (step counts) are held
fixed. The eigenvalues of the small m x m Hessenberg matrix come from ``jnp.linalg.eig`` (LAPACK on
the host, on CPU and GPU backends; not on TPU).

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> loss = lambda w, b: 0.5 * jnp.sum(b["h"] * w**2)
  >>> step = optax_step(loss, optax.sgd(0.5))
  >>> w = jnp.ones(3); s = optax.sgd(0.5).init(w)
  >>> r = step_stability(step, w, s, {"h": jnp.array([1.0, 2.0, 5.0])}, k=1, num_iters=3,
  ...                    key=jax.random.key(0))
  >>> round(float(r.spectral_radius), 4)  # max |1 - 0.5 lambda| = 1.5
  1.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached

PyTree = Any


class StepStability(NamedTuple):
    """Attributes:
    eigenvalues: ``[k]`` complex Ritz values of J, largest magnitude first.
    spectral_radius: |eigenvalues[0]|.
    residuals: ``[k]`` Arnoldi residual estimates |h_{m+1,m} s_{m,i}| of the Ritz pairs.
    flip_radius: the largest |mu| over the Ritz values mu with Re mu < 0 (0 if none): the
      oscillating modes, which leave the unit circle near -1 at the edge of stability (GD:
      lr lambda_max - 1, which reaches 1 at lambda_max = 2/lr). The spectral radius itself stays
      near 1 all along: flat directions of the loss give multipliers 1, and negative curvature
      multipliers just above 1 (a saddle being escaped, not an oscillation).
    """

    eigenvalues: jax.Array
    spectral_radius: jax.Array
    residuals: jax.Array
    flip_radius: jax.Array


def optax_step(loss_fn: Callable[..., jax.Array], tx: optax.GradientTransformation):
    """``step(params, opt_state, batch) -> (params, opt_state)``: one full-batch optax step.

    Transforms with extra-argument support also receive ``grad_fn(params) -> grads`` of the same
    batch and that batch's ``loss`` at ``params`` (what the runner passes: SAM-type rules need the
    first, flooding the second).
    """

    def step(params, opt_state, batch):
        grad_fn = lambda p: jax.grad(loss_fn)(p, batch)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        if isinstance(tx, optax.GradientTransformationExtraArgs):
            updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn, loss=loss)
        else:
            updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


def arnoldi(matvec: Callable[[PyTree], PyTree], v0: PyTree, num_iters: int):
    """Arnoldi with full (twice) Gram-Schmidt: the (m+1) x m Hessenberg matrix and the basis.

    After an exact breakdown (an invariant subspace) it restarts from a pseudo-random vector
    orthogonal to the basis and records a zero subdiagonal entry.
    """
    q0 = tree.scale(1.0 / tree.norm(v0), v0)
    basis = tree.basis_set(tree.basis_zeros(v0, num_iters), 0, q0)
    dtype = jax.tree.leaves(v0)[0].dtype
    eps = jnp.finfo(dtype).eps

    def body(carry, i):
        basis, size = carry
        w = matvec(tree.basis_get(basis, i))
        # A q_i has components along the whole basis (no recurrence): two full passes.
        h1, w = tree.project_out(basis, w)
        h2, w = tree.project_out(basis, w)
        h = h1 + h2
        beta = tree.norm(w)
        size = jnp.maximum(size, jnp.max(jnp.abs(h)))
        breakdown = beta <= 100 * eps * size

        q = jax.lax.cond(
            breakdown,
            lambda: tree.restart_vector(basis, i, v0),
            lambda: tree.scale(1.0 / jnp.where(breakdown, 1.0, beta), w),
        )
        beta = jnp.where(breakdown, 0.0, beta)
        basis = tree.basis_set(basis, i + 1, q)
        return (basis, size), jnp.concatenate([h, beta[None]])

    (basis, _), columns = jax.lax.scan(body, (basis, jnp.zeros((), dtype)), jnp.arange(num_iters))
    # columns[i] holds <q_j, A q_i> for j < m, then h_{i+1, i}; place the latter below the diagonal.
    m = num_iters
    upper = columns[:, :m].T
    sub = jnp.zeros((m + 1, m), dtype).at[jnp.arange(1, m + 1), jnp.arange(m)].set(columns[:, m])
    hessenberg = jnp.concatenate([upper, jnp.zeros((1, m), dtype)]) + sub
    return hessenberg, basis


@eager_cached(static_argnames=("k", "num_iters", "precision"))
def step_stability(
    step_fn: Callable[..., tuple[PyTree, PyTree]],
    params: PyTree,
    opt_state: PyTree,
    *args,
    k: int = 1,
    num_iters: int = 30,
    key: jax.Array,
    precision: str | None = "highest",
) -> StepStability:
    """The k largest-magnitude eigenvalues of the Jacobian of one optimizer step.

    Args:
      step_fn: ``step_fn(params, opt_state, *args) -> (params, opt_state)``, e.g.
        :func:`optax_step`.
      params, opt_state: the point at which the step is linearized.
      *args: passed to ``step_fn`` (the batch).
      k: how many eigenvalues.
      num_iters: Arnoldi steps m (k <= m).
      key: the random start.
      precision: matmul precision of the products.
    """
    if k > num_iters:
        raise ValueError(f"k = {k} eigenvalues need num_iters >= k, got {num_iters}")
    leaves, treedef = jax.tree.flatten((params, opt_state))
    floating = [i for i, x in enumerate(leaves) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]

    def f(vec):
        full = list(leaves)
        for i, x in zip(floating, vec, strict=True):
            full[i] = x
        new_params, new_state = step_fn(*treedef.unflatten(full), *args)
        new_leaves = jax.tree.leaves((new_params, new_state))
        return [new_leaves[i] for i in floating]

    with jax.default_matmul_precision(precision):
        _, jvp = jax.linearize(f, [leaves[i] for i in floating])
        v0 = tree.normal_like(key, [leaves[i] for i in floating])
        hessenberg, _ = arnoldi(jvp, v0, num_iters)
    values, vectors = jnp.linalg.eig(hessenberg[:num_iters])
    idx = jnp.argsort(-jnp.abs(values))[:k]
    residuals = jnp.abs(hessenberg[num_iters, num_iters - 1] * vectors[num_iters - 1, idx])
    # Krylov methods resolve both ends of the spectrum first, so the multiplier nearest -1 is
    # among the converged Ritz values even when the cluster near 1 is larger in magnitude.
    flip = jnp.max(jnp.where(values.real < 0, jnp.abs(values), 0.0))
    return StepStability(values[idx], jnp.abs(values[idx[0]]), residuals, flip)
