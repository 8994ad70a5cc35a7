"""Hamiltonian Monte Carlo with a fixed (optionally jittered) number of leapfrog steps.

Duane et al. (1987); Neal (2011), "MCMC using Hamiltonian dynamics", sec. 3.2. Draw
:math:`p \\sim N(0, M)`, integrate Hamilton's equations with ``num_integration_steps``
leapfrog steps of size :math:`\\epsilon` (:mod:`inference.mcmc.integrators`) to
:math:`(x', p')`, and accept :math:`x'` with probability
:math:`\\min(1, \\exp(H(x, p) - H(x', p')))`. The momentum flip that makes the proposal an
involution is implicit because :math:`K(-p) = K(p)` and the momentum is discarded.

Jitter (Neal 2011) draws the step size uniformly from
:math:`\\epsilon [1 - j, 1 + j]` at each transition, which breaks periodicities.
A transition whose energy error :math:`H(x', p') - H(x, p)` exceeds ``max_energy_error``
(default 1000, as Stan) is reported as divergent.
"""

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import integrators, metrics
from inference.mcmc.base import Info, State


def log_accept_ratio(
    key: Array, state: State, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> Array:
    """:math:`H(x, p) - H(x', p')` after ONE leapfrog step from a fresh momentum.

    This is the quantity of Hoffman & Gelman (2014), algorithm 4 (the step-size heuristic).
    """
    p = metrics.sample_momentum(key, inverse_mass_matrix, dtype=state.position.dtype)
    start = integrators.from_state(state, p)
    end = integrators.leapfrog(start, logdensity_fn, step_size, inverse_mass_matrix)
    delta = integrators.hamiltonian(start, inverse_mass_matrix) - integrators.hamiltonian(
        end, inverse_mass_matrix
    )
    return jnp.where(jnp.isnan(delta), -jnp.inf, delta)


def step(
    key: Array,
    state: State,
    logdensity_fn,
    step_size,
    inverse_mass_matrix: Array,
    num_integration_steps=10,
    step_size_jitter: float = 0.0,
    max_energy_error: float = 1000.0,
) -> tuple[State, Info]:
    """One HMC transition.

    ``num_integration_steps`` may be a Python int or a traced integer (the ``path_length``
    option of :class:`inference.mcmc.HMC` computes it from the step size). ``n_steps`` in the
    returned :class:`Info` is the number of leapfrog steps (gradient evaluations).
    """
    key_p, key_jitter, key_accept = jax.random.split(key, 3)
    if step_size_jitter:
        u = jax.random.uniform(key_jitter, minval=-1.0, maxval=1.0, dtype=state.position.dtype)
        step_size = step_size * (1.0 + step_size_jitter * u)
    p = metrics.sample_momentum(key_p, inverse_mass_matrix, dtype=state.position.dtype)
    start = integrators.from_state(state, p)
    end = integrators.integrate(
        start, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps
    )
    h0 = integrators.hamiltonian(start, inverse_mass_matrix)
    h1 = integrators.hamiltonian(end, inverse_mass_matrix)
    delta = h0 - h1  # +inf/-inf/NaN handled: NaN energies were mapped to +inf
    delta = jnp.where(jnp.isnan(delta), -jnp.inf, delta)
    accept = jnp.log(jax.random.uniform(key_accept, dtype=delta.dtype)) < delta
    new_state = jax.tree.map(lambda a, b: jnp.where(accept, a, b), integrators.to_state(end), state)
    info = Info(
        acceptance_rate=jnp.exp(jnp.minimum(delta, 0.0)),
        diverging=-delta > max_energy_error,
        energy=jnp.where(accept, h1, h0),
        n_steps=jnp.asarray(num_integration_steps, jnp.int32),
        tree_depth=jnp.zeros((), jnp.int32),
    )
    return new_state, info
