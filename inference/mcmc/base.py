"""Shared state and diagnostics of every MCMC kernel.

All kernels act on a flat position vector ``x`` of shape ``(d,)`` (the model layer ravels
pytrees) and a log density ``logdensity_fn(x) -> scalar``. A kernel is two pure functions,
``init(position, logdensity_fn) -> State`` and
``step(key, state, logdensity_fn, step_size, inverse_mass_matrix) -> (State, Info)``, so that
``jax.vmap`` over chains and ``jax.lax.scan`` over draws apply directly.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


class State(NamedTuple):
    """Position with its log density and gradient (the gradient kernels reuse it)."""

    position: Array
    logdensity: Array
    logdensity_grad: Array


class Info(NamedTuple):
    """Per-transition diagnostics, named as ArviZ's ``sample_stats`` group names them.

    ``energy`` is the Hamiltonian at the accepted state (for non-Hamiltonian kernels the
    potential energy ``-logdensity``); ``n_steps`` counts gradient (or density) evaluations;
    ``tree_depth`` is 0 for kernels without a tree.
    """

    acceptance_rate: Array
    diverging: Array
    energy: Array
    n_steps: Array
    tree_depth: Array


def init(position: Array, logdensity_fn) -> State:
    """Evaluate the log density and its gradient at ``position``."""
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return State(position, logdensity, grad)


def metropolis_hastings(
    key: Array, state: State, propose: Callable[[Array, State], tuple[State, Array]]
) -> tuple[State, Info]:
    """One Metropolis-Hastings transition (Metropolis et al. 1953; Hastings 1970).

    ``propose(key, state) -> (proposal, log_ratio)`` draws ``x' ~ q(. | x)`` and returns
    ``log r = log pi(x') - log pi(x) + log q(x | x') - log q(x' | x)`` (``NaN`` counted as
    ``-inf``); ``x'`` is accepted with probability ``min(1, r)``. One density evaluation:
    ``n_steps = 1``, ``energy = -log pi`` at the returned state.
    """
    key_prop, key_accept = jax.random.split(key)
    proposal, log_ratio = propose(key_prop, state)
    accept = jnp.log(jax.random.uniform(key_accept, dtype=log_ratio.dtype)) < log_ratio
    new_state = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposal, state)
    info = Info(
        acceptance_rate=jnp.exp(jnp.minimum(log_ratio, 0.0)),
        diverging=jnp.zeros((), bool),
        energy=-new_state.logdensity,
        n_steps=jnp.ones((), jnp.int32),
        tree_depth=jnp.zeros((), jnp.int32),
    )
    return new_state, info
