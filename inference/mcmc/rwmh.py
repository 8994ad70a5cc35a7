"""Random-walk Metropolis-Hastings with a Gaussian proposal.

The proposal is :math:`x' = x + \\epsilon \\xi` with :math:`\\xi \\sim N(0, M^{-1})`, i.e.
:math:`q(x' \\mid x) = N(x' ; x, \\epsilon^2 M^{-1})`. It is symmetric, so the Metropolis
acceptance probability is :math:`\\alpha = \\min(1, \\pi(x') / \\pi(x))` (Metropolis et al. 1953;
Hastings 1970). Warm-up sets :math:`M^{-1}` to the target covariance estimate; the optimal
acceptance rate in high dimension is 0.234 (Roberts, Gelman & Gilks 1997).

The returned state carries the gradient at the new position too, so that every kernel's
:class:`~inference.mcmc.base.State` is valid for every other kernel.
"""

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import metrics
from inference.mcmc.base import Info, State, metropolis_hastings


def _propose(key, state: State, logdensity_fn, step_size, inverse_mass_matrix):
    noise = metrics.sample_noise(key, inverse_mass_matrix, dtype=state.position.dtype)
    position = state.position + step_size * noise
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    proposal = State(position, logdensity, grad)
    log_ratio = logdensity - state.logdensity
    return proposal, jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)


def log_accept_ratio(
    key: Array, state: State, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> Array:
    """:math:`\\log \\pi(x') - \\log \\pi(x)` for one proposal (used by the step-size heuristic)."""
    return _propose(key, state, logdensity_fn, step_size, inverse_mass_matrix)[1]


def step(
    key: Array, state: State, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> tuple[State, Info]:
    """One random-walk Metropolis transition; ``n_steps`` = 1 density evaluation."""
    return metropolis_hastings(
        key, state, lambda k, s: _propose(k, s, logdensity_fn, step_size, inverse_mass_matrix)
    )
