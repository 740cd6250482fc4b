"""Linear-stability thresholds on the sharpness for common update rules.

On a quadratic with Hessian eigenvalue lambda, each rule is a linear recurrence per eigendirection;
the threshold is the lambda at which its spectral radius reaches 1 (the edge of stability, Cohen et
al. 2021, 2022). With a = lr lambda:

* gradient descent w <- w - lr g: |1 - a| <= 1, lambda <= 2/lr.
* heavy ball m <- b m + g, w <- w - lr m: the characteristic polynomial z^2 - (1 + b - a) z + b
  has a root at -1 when a = 2 + 2b, lambda <= (2 + 2b)/lr.
* Nesterov in optax's form w <- w - lr (g + b m), m <- b m + g: z^2 - (1 + b - a(1 + b)) z +
  b (1 - a) has a root at -1 when a (1 + 2b) = 2 + 2b, lambda <= (2 + 2b)/(lr (1 + 2b)).
* Adam with frozen preconditioner P: heavy ball with EMA momentum on P^-1/2 H P^-1/2, the
  preconditioned sharpness, lambda <= (2 + 2 b1)/((1 - b1) lr) = 38/lr at b1 = 0.9.
* unnormalized SAM w <- w - lr grad L(w + rho grad L(w)): a (1 + rho lambda) <= 2,
  lambda <= (sqrt(1 + 8 rho/lr) - 1)/(2 rho) (Agarwala & Dauphin 2023).
* minibatch SGD at a global minimum of a square loss: tr(H) <= 2/lr (Wu & Su 2023) and
  ||H||_F <= O(sqrt(B)/lr) for batch size B (Wu, Wang & Su 2022; reported with constant 1); its
  batch sharpness E_B[g_B^T H_B g_B / ||g_B||^2] hovers at GD's 2/lr (Andreyev & Beneventano 2024).

Example:
  >>> momentum_threshold(0.01, 0.9)
  380.0
"""

from __future__ import annotations

import math


def gd_threshold(learning_rate: float) -> float:
    return 2.0 / learning_rate


def momentum_threshold(learning_rate: float, momentum: float) -> float:
    return (2.0 + 2.0 * momentum) / learning_rate


def nesterov_threshold(learning_rate: float, momentum: float) -> float:
    return (2.0 + 2.0 * momentum) / (learning_rate * (1.0 + 2.0 * momentum))


def adam_threshold(learning_rate: float, b1: float) -> float:
    """For the *preconditioned* sharpness lambda_max(P^-1/2 H P^-1/2)."""
    return (2.0 + 2.0 * b1) / ((1.0 - b1) * learning_rate)


def unnormalized_sam_threshold(learning_rate: float, rho: float) -> float:
    if rho == 0:
        return gd_threshold(learning_rate)
    return (math.sqrt(1.0 + 8.0 * rho / learning_rate) - 1.0) / (2.0 * rho)


def sgd_trace_threshold(learning_rate: float) -> float:
    """tr(H) <= 2/lr at a linearly stable minimum of SGD (Wu & Su 2023)."""
    return 2.0 / learning_rate


def sgd_frobenius_threshold(learning_rate: float, batch_size: int) -> float:
    """sqrt(B)/lr: the scale of the O(sqrt(B)/lr) bound on ||H||_F (Wu, Wang & Su 2022)."""
    return math.sqrt(batch_size) / learning_rate
