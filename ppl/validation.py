"""Checks of user arguments, run on the host before anything is compiled."""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from collections.abc import Callable

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
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
        if seed < 2**32:
            return jax.random.PRNGKey(seed)
        # PRNGKey keeps only the low 32 bits without jax_enable_x64 (2**32 would repeat seed
        # 0); threefry's key of a 64-bit seed is its two 32-bit halves, as with x64 on
        return jax.numpy.asarray([seed >> 32, seed & 0xFFFFFFFF], dtype=jax.numpy.uint32)
    if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(seed)  # raw uint32 keys throughout
    if isinstance(seed, jax.Array) and seed.shape == (2,) and seed.dtype == jax.numpy.uint32:
        return seed
    raise TypeError(f"seed must be an int or a jax PRNG key, got {type(seed).__name__}")


def check_option(name: str, value, options) -> str:
    """``value`` must be one of the strings ``options``; raise naming the argument otherwise."""
    options = tuple(options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {sorted(options)}, got {value!r}")
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(options)}")
    return value


def check_real(
    name: str, value, low: float | None = None, high: float | None = None, *, low_open=False
) -> float:
    """``value`` must be a finite real number in ``[low, high]`` (``(low, high]`` with
    ``low_open``); a bound of ``None`` is no bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.ndarray | jax.Array):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.number):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_flag(name: str, value) -> bool:
    """``value`` must be a boolean (``"no"`` or ``0.5`` would otherwise count as true)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_callable(name: str, fn, expected: str = "") -> Callable:
    """``fn`` must be callable; ``expected`` describes its signature for the message."""
    if not callable(fn):
        sig = f" {expected}" if expected else ""
        raise TypeError(f"{name} must be a callable{sig}, got {type(fn).__name__}")
    return fn


def check_model_keywords(model: Callable, args: tuple, sampler: Callable) -> None:
    """Name a model parameter that shares its name with one of ``sampler``'s own keywords.

    ``sampler(model, *args, seed=..., **model_kwargs)`` takes ``seed`` (and every other keyword
    it declares) itself, so a model parameter of that name can only be given by position. Such a
    parameter left unbound is an error when the model requires it, and a warning when it has a
    default (the model silently runs with the default).
    """
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    n_bound = len(args)
    bound_by_partial = model.keywords if isinstance(model, functools.partial) else {}
    own = {
        name
        for name, p in inspect.signature(sampler).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    for index, param in enumerate(params):
        if (
            param.name not in own
            or param.name in bound_by_partial
            or param.kind is inspect.Parameter.POSITIONAL_ONLY
        ):
            continue
        if param.kind in positional and index < n_bound:
            continue  # given by position: unambiguous
        where = (
            f"model parameter '{param.name}' has the name of ppl.{sampler.__name__}'s own "
            f"keyword '{param.name}', which ppl.{sampler.__name__} takes for itself"
        )
        fix = (
            "pass the model's value by position, or bind it first with "
            f"functools.partial(model, {param.name}=...)"
        )
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{where}: {fix}")
        warnings.warn(
            f"{where}; the model runs with its default {param.name}={param.default!r}: "
            f"to give it another value, {fix}",
            stacklevel=3,
        )


NUMPYRO_NAMES = {
    "num_warmup": "warmup",
    "num_samples": "draws",
    "num_chains": "chains",
    "init_params": "init",
    "rng_key": "seed",
    "num_particles": "particles",
}


def check_numpyro_names(model: Callable, model_kwargs: dict, sampler: Callable) -> None:
    """Name numpyro's spelling of one of ``sampler``'s own keywords (``num_warmup=`` for
    ``warmup=``), which would otherwise go to the model: refused when the model has no such
    parameter (it would fail there with an unexpected keyword), warned about when it takes
    ``**kwargs`` (it would swallow the value silently)."""
    own = inspect.signature(sampler).parameters
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in model_kwargs:
        ours = NUMPYRO_NAMES.get(name)
        if ours is None or ours not in own or name in params:
            continue
        message = (
            f"ppl.{sampler.__name__} got {name}=, numpyro's name for its keyword {ours}=; "
            f"use {ours}= (keywords it does not know go to the model)"
        )
        if not var_kw:
            raise TypeError(message)
        warnings.warn(message + ": the model's **kwargs took it", stacklevel=3)


def seed_key(seed):
    """:func:`check_seed` as a typed PRNG key (``jax.random.key``); for an int seed the same
    bits as ``jax.random.key(seed)``, so results do not change."""
    return jax.random.wrap_key_data(check_seed(seed))


def seed_int(seed) -> int:
    """The integer seed to record in results (-1 when a PRNG key was passed)."""
    return int(seed) if isinstance(seed, numbers.Integral) else -1


def seed_setting(seed) -> int | str:
    """What a checkpoint records of a checked ``seed``: the integer (NumPy integers included),
    or a PRNG key's data as ``"key a b"``, so that resuming with another key is refused."""
    if isinstance(seed, numbers.Integral):
        return int(seed)
    return "key " + " ".join(str(int(v)) for v in np.asarray(check_seed(seed)).ravel())


def check_diffusion_time(sde, t, name: str = "t") -> None:
    """A concrete diffusion time ``t`` must be real, finite and in ``[sde.t_min, sde.t_max]``
    (traced values pass through: they cannot be checked without a host callback)."""
    from inference.diffusion.sde import check_time

    try:
        arr = np.asarray(t)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    except Exception:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(f"{name} must be a real number or array, got {t!r}") from None
    if isinstance(t, bool) or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a real number or array, got {t!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {t!r}")
    check_time(sde, arr, name)
