"""Kernel configuration objects: a kernel's static options, bound once.

Each object is a frozen (hence hashable) dataclass, so it can be passed as a static argument
to ``jax.jit``. It exposes

* ``name``, ``target_accept`` (the acceptance rate that warm-up's dual averaging aims for) and
  ``dense_mass`` (whether warm-up estimates a dense or a diagonal inverse mass matrix);
* ``init(position, logdensity_fn) -> State``;
* ``step(key, state, logdensity_fn, step_size, inverse_mass_matrix) -> (State, Info)``, the
  module-level kernel with the object's static options bound;
* ``log_accept_ratio(key, state, logdensity_fn, step_size, inverse_mass_matrix)``, the log
  acceptance ratio of one elementary proposal, which the step-size heuristic of
  Hoffman & Gelman (2014, alg. 4) uses;
* how warm-up adapts its step size (:mod:`inference.mcmc.adaptation`): ``step_size_rule``
  (``"dual_averaging"``, or ``"robbins_monro"`` for RWMH and MALA), ``terminal_buffer`` (the
  final step-size-only iterations; Stan's 50, 200 for RWMH and MALA) and ``initial_scaling``
  (``None``: the heuristic above at every (re)start; a number ``c``: the step size
  ``c / sqrt(d)``, RWMH's).

``get_kernel("nuts", target_accept=0.9)`` maps a name (case-insensitive) and options to an
object; a configured object is returned as it is (or with the options replaced).
"""

import dataclasses
import math
import numbers
from typing import ClassVar

import jax.numpy as jnp

from inference.mcmc import base, hmc, mala, nuts, rwmh

__all__ = ["HMC", "MALA", "NUTS", "RWMH", "get_kernel"]


def _check_target_accept(value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 < float(value) < 1.0
    ):
        raise ValueError(
            f"target_accept must be a number in the open interval (0, 1), got {value!r}"
        )


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_positive_int(name: str, value, upper: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value!r}")


class _Kernel:
    """Behaviour shared by the kernel objects."""

    name: ClassVar[str]
    step_size_rule: ClassVar[str] = "dual_averaging"
    terminal_buffer: ClassVar[int] = 50
    initial_scaling: ClassVar[float | None] = None
    init = staticmethod(base.init)

    def __post_init__(self) -> None:
        _check_target_accept(self.target_accept)
        _check_bool("dense_mass", self.dense_mass)


@dataclasses.dataclass(frozen=True)
class NUTS(_Kernel):
    """Multinomial No-U-Turn Sampler (:mod:`inference.mcmc.nuts`).

    ``max_tree_depth`` bounds a transition at ``2**max_tree_depth - 1`` leapfrog steps;
    ``max_energy_error`` is the energy error beyond which a trajectory is divergent.
    """

    target_accept: float = 0.8
    dense_mass: bool = False
    max_tree_depth: int = 10
    max_energy_error: float = 1000.0
    name: ClassVar[str] = "nuts"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("max_tree_depth", self.max_tree_depth, upper=30)
        _check_positive_number("max_energy_error", self.max_energy_error)

    def step(self, key, state, logdensity_fn, step_size, inverse_mass_matrix):
        return nuts.step(
            key,
            state,
            logdensity_fn,
            step_size,
            inverse_mass_matrix,
            max_tree_depth=self.max_tree_depth,
            max_energy_error=self.max_energy_error,
        )

    log_accept_ratio = staticmethod(hmc.log_accept_ratio)


def _check_positive_number(name: str, value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class HMC(_Kernel):
    """Static-trajectory Hamiltonian Monte Carlo (:mod:`inference.mcmc.hmc`).

    Give either ``num_steps`` (leapfrog steps per transition, default 10) or ``path_length``
    (integration time; the number of steps is then ``ceil(path_length / step_size)``, clipped
    to ``[1, max_num_steps]``), not both. ``step_size_jitter`` in ``[0, 1)`` draws the step
    size uniformly from ``step_size * [1 - jitter, 1 + jitter]`` at each transition.
    """

    num_steps: int | None = None
    path_length: float | None = None
    target_accept: float = 0.8
    dense_mass: bool = False
    step_size_jitter: float = 0.0
    max_num_steps: int = 1024
    max_energy_error: float = 1000.0
    name: ClassVar[str] = "hmc"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps is not None and self.path_length is not None:
            raise ValueError("give either num_steps or path_length to HMC, not both")
        if self.path_length is None:
            if self.num_steps is None:
                object.__setattr__(self, "num_steps", 10)
            _check_positive_int("num_steps", self.num_steps)
        else:
            _check_positive_number("path_length", self.path_length)
        _check_positive_int("max_num_steps", self.max_num_steps)
        _check_positive_number("max_energy_error", self.max_energy_error)
        j = self.step_size_jitter
        if isinstance(j, bool) or not isinstance(j, numbers.Real) or not 0.0 <= j < 1.0:
            raise ValueError(f"step_size_jitter must be a number in [0, 1), got {j!r}")

    def num_integration_steps(self, step_size):
        """Leapfrog steps per transition for this step size."""
        if self.path_length is None:
            return self.num_steps
        n = jnp.ceil(self.path_length / step_size)
        return jnp.clip(jnp.nan_to_num(n, nan=1.0), 1, self.max_num_steps).astype(jnp.int32)

    def step(self, key, state, logdensity_fn, step_size, inverse_mass_matrix):
        return hmc.step(
            key,
            state,
            logdensity_fn,
            step_size,
            inverse_mass_matrix,
            num_integration_steps=self.num_integration_steps(step_size),
            step_size_jitter=self.step_size_jitter,
            max_energy_error=self.max_energy_error,
        )

    log_accept_ratio = staticmethod(hmc.log_accept_ratio)


@dataclasses.dataclass(frozen=True)
class MALA(_Kernel):
    """Preconditioned Metropolis-adjusted Langevin algorithm (:mod:`inference.mcmc.mala`).

    Like RWMH its acceptance is that of one proposal, so warm-up adapts its step size by
    Robbins-Monro over a 200-iteration terminal buffer (from the step-size heuristic)."""

    target_accept: float = 0.574
    dense_mass: bool = False
    name: ClassVar[str] = "mala"
    step_size_rule: ClassVar[str] = "robbins_monro"
    terminal_buffer: ClassVar[int] = 200

    step = staticmethod(mala.step)
    log_accept_ratio = staticmethod(mala.log_accept_ratio)


@dataclasses.dataclass(frozen=True)
class RWMH(_Kernel):
    """Gaussian random-walk Metropolis-Hastings (:mod:`inference.mcmc.rwmh`).

    Its acceptance probability is a noisy statistic (one random direction per iteration), so
    warm-up adapts its step size by Robbins-Monro over a 200-iteration terminal buffer, starting
    from the optimal scaling ``2.38 / sqrt(d)`` (:mod:`inference.mcmc.adaptation`).
    """

    target_accept: float = 0.234
    dense_mass: bool = False
    name: ClassVar[str] = "rwmh"
    step_size_rule: ClassVar[str] = "robbins_monro"
    terminal_buffer: ClassVar[int] = 200
    initial_scaling: ClassVar[float | None] = 2.38

    step = staticmethod(rwmh.step)
    log_accept_ratio = staticmethod(rwmh.log_accept_ratio)


_KERNELS = {cls.name: cls for cls in (NUTS, HMC, MALA, RWMH)}


def get_kernel(name_or_kernel, **options) -> NUTS | HMC | MALA | RWMH:
    """Return a kernel object from a name ("nuts", "hmc", "mala", "rwmh"; any case) or object.

    ``options`` are the object's fields (``target_accept``, ``dense_mass``, ...). With an object,
    the options replace its fields. Raises ``ValueError`` for an unknown name and ``TypeError``
    for an option the kernel does not have.
    """
    if isinstance(name_or_kernel, _Kernel):
        cls = type(name_or_kernel)
    elif isinstance(name_or_kernel, str):
        cls = _KERNELS.get(name_or_kernel.lower())
        if cls is None:
            raise ValueError(
                f"unknown kernel {name_or_kernel!r}: expected one of "
                + ", ".join(repr(k) for k in _KERNELS)
                + " or a kernel object such as inference.mcmc.NUTS()"
            )
    else:
        raise TypeError(
            "kernel must be a name (one of " + ", ".join(repr(k) for k in _KERNELS) + ") or a "
            f"kernel object such as inference.mcmc.NUTS(), got {type(name_or_kernel).__name__}"
        )
    fields = [f.name for f in dataclasses.fields(cls)]
    for option in options:
        if option not in fields:
            raise TypeError(
                f"unknown option {option!r} for kernel {cls.name!r}: expected one of "
                + ", ".join(fields)
            )
    if isinstance(name_or_kernel, _Kernel):
        if not options:
            return name_or_kernel
        if isinstance(name_or_kernel, HMC) and "path_length" in options:
            options.setdefault("num_steps", None)
        return dataclasses.replace(name_or_kernel, **options)
    return cls(**options)
