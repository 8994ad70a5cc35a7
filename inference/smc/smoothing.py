"""Forward-filtering backward-sampling (FFBS) from a stored particle history.

Given the filtering approximations ``sum_n W_t^n delta_{X_t^n}`` for ``t = 0, ..., T-1``,
the joint smoothing distribution factorises backwards (Chopin & Papaspiliopoulos 2020,
*An Introduction to Sequential Monte Carlo*, ch. 12, Sec. 12.3, Algorithm 12.2; Godsill,
Doucet & West 2004):

    X_{T-1} ~ sum_n W_{T-1}^n delta_{X_{T-1}^n},
    X_t | X_{t+1} = x' ~ sum_n W_t^n p_{t+1}(x' | X_t^n) delta_{X_t^n} / (normaliser),

so each of the ``M`` trajectories needs ``O(N)`` work per step: ``O(M N T)`` in all, computed
here as one ``(M, N)`` matrix of backward log-weights per step inside a reverse ``lax.scan``.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["ffbs"]

PyTree = Any


def ffbs(
    key: Array,
    particles: PyTree,
    log_weights: Array,
    transition_logpdf: Callable[[PyTree, PyTree, Array], Array],
    num_trajectories: int,
) -> PyTree:
    """Draw ``num_trajectories`` smoothing trajectories by backward sampling.

    Args:
        key: PRNG key.
        particles: particle history, a pytree with leading axes ``(T, N)``.
        log_weights: ``(T, N)`` normalised (or unnormalised) filtering log-weights.
        transition_logpdf: batched ``transition_logpdf(x, x_prev, t) -> (n,)`` giving
            ``log p_t(x | x_prev)``.
        num_trajectories: ``M``.

    Returns:
        A pytree like ``particles`` with leading axes ``(T, M)``: ``M`` draws of
        ``X_{0:T-1}`` from the particle approximation of ``p(x_{0:T-1} | y_{0:T-1})``.
    """
    num_steps = log_weights.shape[0]
    keys = jax.random.split(key, num_steps)
    at = lambda t: jax.tree.map(lambda leaf: leaf[t], particles)  # noqa: E731
    take = lambda tree, idx: jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), tree)  # noqa: E731

    idx_last = jax.random.categorical(keys[-1], log_weights[-1], shape=(num_trajectories,)).astype(
        jnp.int32
    )
    x_last = take(at(num_steps - 1), idx_last)

    def backward(x_next, inp):
        t, k = inp
        x_t = at(t)
        n = log_weights.shape[1]

        def one(x_next_m):
            # log p_{t+1}(x_next_m | X_t^n) for all n, via the batched user function.
            rep = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n, *leaf.shape)), x_next_m)
            return transition_logpdf(rep, x_t, t + 1)

        log_b = log_weights[t][None, :] + jax.vmap(one)(x_next)  # (M, N)
        log_b = jnp.where(jnp.isnan(log_b), -jnp.inf, log_b)  # a NaN state is never chosen
        idx = jax.random.categorical(k, log_b, axis=-1).astype(jnp.int32)
        x = take(x_t, idx)
        return x, x

    ts = jnp.arange(num_steps - 2, -1, -1, dtype=jnp.int32)
    _, xs = jax.lax.scan(backward, x_last, (ts, keys[:-1][::-1]))
    # xs is ordered t = T-2, ..., 0; reverse and append the last step.
    xs = jax.tree.map(lambda a: a[::-1], xs)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]], axis=0), xs, x_last)
