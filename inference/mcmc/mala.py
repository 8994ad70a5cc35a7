"""Preconditioned Metropolis-adjusted Langevin algorithm (MALA).

Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and their
discrete approximations", sec. 1.4.2 (the Metropolis-adjusted Langevin algorithm), with a
constant preconditioner :math:`M^{-1}`. The proposal is one Euler-Maruyama step of the Langevin
diffusion :math:`dX = \\tfrac12 M^{-1} \\nabla \\log \\pi(X) dt + M^{-1/2} dW` over time
:math:`\\epsilon^2`:

.. math::
    x' = \\mu(x) + \\epsilon \\xi, \\qquad
    \\mu(x) = x + \\tfrac{\\epsilon^2}{2} M^{-1} \\nabla \\log \\pi(x), \\qquad
    \\xi \\sim N(0, M^{-1}),

so :math:`\\log q(x' \\mid x) = -\\frac{1}{2\\epsilon^2} (x' - \\mu(x))^\\top M (x' - \\mu(x))
+ \\text{const}`, and the Metropolis-Hastings acceptance probability is

.. math::
    \\alpha = \\min\\Bigl(1, \\frac{\\pi(x')\\, q(x \\mid x')}{\\pi(x)\\, q(x' \\mid x)}\\Bigr).

(This equals HMC with a single leapfrog step, which the tests check.) The optimal acceptance
rate in high dimension is 0.574 (Roberts & Rosenthal 1998).
"""

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import metrics
from inference.mcmc.base import Info, State, metropolis_hastings


def _log_q(x_to: Array, x_from: State, step_size, inverse_mass_matrix: Array) -> Array:
    """:math:`\\log q(x_{to} \\mid x_{from})` up to a constant that cancels in the ratio."""
    mean = x_from.position + 0.5 * step_size**2 * metrics.velocity(
        x_from.logdensity_grad, inverse_mass_matrix
    )
    return -0.5 * metrics.mahalanobis_inverse(x_to - mean, inverse_mass_matrix) / step_size**2


def _propose(key, state: State, logdensity_fn, step_size, inverse_mass_matrix):
    noise = metrics.sample_noise(key, inverse_mass_matrix, dtype=state.position.dtype)
    drift = 0.5 * step_size**2 * metrics.velocity(state.logdensity_grad, inverse_mass_matrix)
    position = state.position + drift + step_size * noise
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    proposal = State(position, logdensity, grad)
    log_ratio = (
        logdensity
        - state.logdensity
        + _log_q(state.position, proposal, step_size, inverse_mass_matrix)
        - _log_q(position, state, step_size, inverse_mass_matrix)
    )
    return proposal, jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)


def log_accept_ratio(
    key: Array, state: State, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> Array:
    """Log Metropolis-Hastings ratio of one Langevin proposal (used by the step-size heuristic)."""
    return _propose(key, state, logdensity_fn, step_size, inverse_mass_matrix)[1]


def step(
    key: Array, state: State, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> tuple[State, Info]:
    """One MALA transition; ``n_steps`` = 1 gradient evaluation."""
    return metropolis_hastings(
        key, state, lambda k, s: _propose(k, s, logdensity_fn, step_size, inverse_mass_matrix)
    )
