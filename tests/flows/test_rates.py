"""The linear model dK/dt = lr (c0 - M(X)) of the central flow against autodiff of its definition.

K_ij(w, nu) = (P^-1/2 q_i)^T H(w) (P^-1/2 q_j) with q fixed; along the flow's velocity for a given
X its time derivative is a ``jax.jvp`` through H and P: an independent route to the same number.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dynamics.curvature import curvature_gradients, hvp, stacked_dots
from dynamics.flows import Optimizer, central, edge


def _problem(rng):
    params = {"w1": rng.normal(size=(3, 5)), "w2": rng.normal(size=(5, 1))}
    data = {"x": rng.normal(size=(12, 3)), "y": rng.normal(size=(12, 1))}

    def loss(p, b):
        return 0.5 * jnp.mean((jnp.tanh(b["x"] @ p["w1"]) @ p["w2"] - b["y"]) ** 2)

    return params, data, loss


def test_rmsprop_and_gd_rates_match_autodiff_of_the_edge_block():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        params, data, loss = _problem(rng)
        params, data = jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, data)
        flat, unravel = ravel_pytree(params)
        k = 2
        x = rng.normal(size=(k, k))
        x = jnp.asarray(x @ x.T)
        for name in ("sgd", "rmsprop"):
            opt = Optimizer(name, learning_rate=0.1, decay=0.9, eps=1e-8)
            grads = jax.grad(loss)(params, data)
            state = opt.initial_state(params, grads)
            if opt.adaptive:  # a nu unlike grad^2, so that dnu/dt is not zero
                state["nu"] = jax.tree.map(lambda n: n + 0.3, state["nu"])
            p = opt.preconditioner(state)
            pf = ravel_pytree(p)[0]
            h = jax.hessian(lambda f: loss(unravel(f), data))(flat)
            a = h / jnp.sqrt(pf)[:, None] / jnp.sqrt(pf)[None, :]
            _, vecs = jnp.linalg.eigh(a)
            q = jax.vmap(unravel)(vecs[:, ::-1][:, :k].T)
            dirs = edge.directions(q, p if opt.adaptive else None)
            g = curvature_gradients(loss, params, dirs, data)
            if opt.adaptive:
                h_dirs = jax.vmap(lambda v: hvp(loss, params, v, data))(dirs)
                c0, m = central._rmsprop_terms(opt, state, grads, q, dirs, g, h_dirs, p)
                nu_target = jax.tree.map(
                    lambda gr, o: gr**2 + o,
                    grads,
                    central._combine(x, central._outer_products(h_dirs)),
                )
            else:
                c0, m = -stacked_dots(g, grads, 2, 0), 0.5 * stacked_dots(g, g, 2, 2)
                nu_target = None
            force = jax.tree.map(lambda gr, c: gr + 0.5 * c, grads, central._combine(x, g))
            velocity = opt.velocity(state, force, nu_target)

            def block(s):
                pp = opt.preconditioner(s)
                a_ = edge.directions(q, pp if opt.adaptive else None)
                ha = jax.vmap(lambda v: hvp(loss, s["w"], v, data))(a_)
                return stacked_dots(a_, ha, 1, 1)

            _, rate = jax.jvp(block, (state,), (velocity,))
            predicted = opt.learning_rate * (c0 - jnp.einsum("ijkl,kl->ij", m, x))
            np.testing.assert_allclose(rate, predicted, rtol=1e-9, atol=1e-11)
            assert np.abs(np.asarray(rate)).max() > 1e-3  # a nonzero rate was compared
