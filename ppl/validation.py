"""Checks of user arguments, run on the host before anything is compiled."""

from __future__ import annotations

import numbers

import jax
import numpy as np


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` must be an integer >= ``minimum``; raise naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_probability(name: str, value, low_open=True, high_open=True) -> float:
    """``value`` must be a real number in (0, 1) (ends closed where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}")
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value < 1 if high_open else value <= 1
    if not (ok_low and ok_high and np.isfinite(value)):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")
    return float(value)


def check_seed(seed):
    """An integer seed or a JAX PRNG key -> a PRNG key."""
    if isinstance(seed, bool):
        raise TypeError(f"seed must be an int or a jax PRNG key, got {seed!r}")
    if isinstance(seed, numbers.Integral):
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return jax.random.PRNGKey(int(seed))
    if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(seed)  # raw uint32 keys throughout
    if isinstance(seed, jax.Array) and seed.shape == (2,) and seed.dtype == jax.numpy.uint32:
        return seed
    raise TypeError(f"seed must be an int or a jax PRNG key, got {type(seed).__name__}")
