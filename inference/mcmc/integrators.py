"""The leapfrog (velocity Verlet) integrator shared by HMC, NUTS and the step-size heuristic.

For the Hamiltonian :math:`H(x, p) = -\\log \\pi(x) + \\tfrac12 p^\\top M^{-1} p` one leapfrog
step of size :math:`\\epsilon` is (Neal 2011, "MCMC using Hamiltonian dynamics", sec. 2.3.3;
Betancourt 2017, sec. 5.1)

.. math::
    p_{1/2} &= p + \\tfrac{\\epsilon}{2} \\nabla \\log \\pi(x) \\\\
    x' &= x + \\epsilon M^{-1} p_{1/2} \\\\
    p' &= p_{1/2} + \\tfrac{\\epsilon}{2} \\nabla \\log \\pi(x').

The map is symplectic (volume preserving) and time reversible: stepping from
:math:`(x', -p')` returns :math:`(x, -p)`; a negative ``step_size`` integrates backwards in
time, which NUTS uses to grow its trajectory to the left. The energy error is
:math:`O(\\epsilon^2)` over a fixed integration time.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import metrics
from inference.mcmc.base import State


class IntegratorState(NamedTuple):
    """A point of phase space with the log density and gradient at its position."""

    position: Array
    momentum: Array
    logdensity: Array
    logdensity_grad: Array


def from_state(state: State, momentum: Array) -> IntegratorState:
    """Attach a momentum to a kernel state."""
    return IntegratorState(state.position, momentum, state.logdensity, state.logdensity_grad)


def to_state(istate: IntegratorState) -> State:
    """Drop the momentum."""
    return State(istate.position, istate.logdensity, istate.logdensity_grad)


def leapfrog(
    istate: IntegratorState, logdensity_fn, step_size, inverse_mass_matrix: Array
) -> IntegratorState:
    """One leapfrog step (equations in the module docstring); one gradient evaluation."""
    x, p, _, grad = istate
    p_half = p + 0.5 * step_size * grad
    x_new = x + step_size * metrics.velocity(p_half, inverse_mass_matrix)
    logdensity_new, grad_new = jax.value_and_grad(logdensity_fn)(x_new)
    p_new = p_half + 0.5 * step_size * grad_new
    return IntegratorState(x_new, p_new, logdensity_new, grad_new)


def integrate(
    istate: IntegratorState, logdensity_fn, step_size, inverse_mass_matrix: Array, num_steps
) -> IntegratorState:
    """``num_steps`` leapfrog steps (``num_steps`` may be a traced integer)."""

    def body(_, s):
        return leapfrog(s, logdensity_fn, step_size, inverse_mass_matrix)

    return jax.lax.fori_loop(0, num_steps, body, istate)


def hamiltonian(istate: IntegratorState, inverse_mass_matrix: Array) -> Array:
    """:math:`H(x, p) = -\\log \\pi(x) + K(p)`; NaN is mapped to ``+inf`` (as Stan does)."""
    h = -istate.logdensity + metrics.kinetic_energy(istate.momentum, inverse_mass_matrix)
    return jnp.where(jnp.isnan(h), jnp.inf, h)
