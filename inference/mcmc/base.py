"""Shared state and diagnostics of every MCMC kernel.

All kernels act on a flat position vector ``x`` of shape ``(d,)`` (the model layer ravels
pytrees) and a log density ``logdensity_fn(x) -> scalar``. A kernel is two pure functions,
``init(position, logdensity_fn) -> State`` and
``step(key, state, logdensity_fn, step_size, inverse_mass_matrix) -> (State, Info)``, so that
``jax.vmap`` over chains and ``jax.lax.scan`` over draws apply directly.
"""

from typing import NamedTuple

import jax
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
