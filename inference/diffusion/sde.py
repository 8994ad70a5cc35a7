"""Forward noising SDEs of score-based diffusion models, behind one interface.

Every SDE here is linear, ``dx = f(x, t) dt + g(t) dW`` with ``f(x, t) = lambda(t) x``, so the
transition from data is Gaussian (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR, eqs. 5 and 29):

    x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I),    lambda(t) = d log(alpha_t)/dt,
    g(t)^2 = d(sigma_t^2)/dt - 2 lambda(t) sigma_t^2.

``alpha_t`` is :meth:`marginal_mean_coeff` and ``sigma_t`` :meth:`marginal_std`. Time runs
from data (``t_min``) to noise (``t_max``); samplers integrate backwards.

=========  ======================  ===========================  ==============================
SDE        alpha_t                 sigma_t                      g(t)^2
=========  ======================  ===========================  ==============================
VP         exp(-B(t)/2)            sqrt(1 - exp(-B(t)))          beta(t)
sub-VP     exp(-B(t)/2)            1 - exp(-B(t))                beta(t) (1 - exp(-2 B(t)))
VE         1                       s_min sqrt(r^(2t) - 1)        2 log(r) s_min^2 r^(2t)
EDM        1                       t                             2 t
=========  ======================  ===========================  ==============================

with ``beta(t) = beta_min + t (beta_max - beta_min)``, ``B(t) = int_0^t beta`` and
``r = sigma_max / sigma_min`` (Song et al. 2021, Sec. 3.4 and App. B; EDM: Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS, Table 1 with
``s(t) = 1``, ``sigma(t) = t``). For VE the variance is the exact ``sigma(t)^2 - sigma_min^2``
(score_sde's code uses ``sigma(t)^2``), so that ``g^2 = d sigma_t^2 / dt`` holds exactly.

The classes are frozen (hashable) dataclasses holding Python floats: close over them or pass
them as static arguments to ``jax.jit``. All methods are pure ``jax.numpy`` and broadcast over
``x`` of shape ``(..., d)``; ``t`` is a scalar (or broadcastable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from inference import rng

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "EDMSDE", "check_time", "get_sde"]


def check_time(sde: SDE, t, name: str = "t") -> None:
    """Raise ``ValueError`` if a concrete ``t`` lies outside ``[sde.t_min, sde.t_max]``.

    Traced values are not checkable without a host callback and are passed through; call this
    from user-facing entry points, before compilation.
    """
    try:
        arr = np.asarray(t)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    tol = 1e-6 * max(1.0, abs(sde.t_max))
    if lo < sde.t_min - tol or hi > sde.t_max + tol:
        raise ValueError(
            f"{name} must lie in [t_min, t_max] = [{sde.t_min}, {sde.t_max}] for "
            f"{type(sde).__name__}; got values in [{lo}, {hi}]"
        )


class SDE:
    """Interface shared by all forward SDEs (see the module docstring for the math)."""

    #: The time grid the samplers use unless told otherwise (``time_grid(sde, steps)``):
    #: ``"uniform"`` in t, or ``"edm"``, Karras et al.'s rho = 7 grid in the noise level.
    default_grid: str = "uniform"

    @property
    def t_min(self) -> float:
        raise NotImplementedError

    @property
    def t_max(self) -> float:
        raise NotImplementedError

    # --- schedule -----------------------------------------------------------------------
    def marginal_mean_coeff(self, t) -> Array:
        """``alpha_t`` in ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``."""
        raise NotImplementedError

    def marginal_std(self, t) -> Array:
        """``sigma_t`` in ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``."""
        raise NotImplementedError

    def drift_coeff(self, t) -> Array:
        """``lambda(t) = d log(alpha_t) / dt``, so that ``f(x, t) = lambda(t) x``."""
        raise NotImplementedError

    def diffusion(self, t) -> Array:
        """Diffusion coefficient ``g(t)``."""
        raise NotImplementedError

    def noise_level(self, t) -> Array:
        """Noise-to-signal ratio ``sigma_t / alpha_t`` (EDM's ``sigma``), increasing in t."""
        return self.marginal_std(t) / self.marginal_mean_coeff(t)

    def time_of_noise_level(self, s) -> Array:
        """Inverse of :meth:`noise_level`: the time ``t`` with ``sigma_t / alpha_t = s``."""
        raise NotImplementedError

    # --- SDE coefficients ---------------------------------------------------------------
    def drift(self, x: Array, t) -> Array:
        """Forward drift ``f(x, t) = lambda(t) x``."""
        return self.drift_coeff(t) * x

    def drift_divergence(self, t, dim: int) -> Array:
        """``div_x f(x, t) = d * lambda(t)`` (independent of x)."""
        return dim * self.drift_coeff(t)

    # --- prior at t_max -----------------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian reference ``p_T = N(0, prior_std^2 I)``."""
        raise NotImplementedError

    def prior_sample(self, key: Array, shape) -> Array:
        """Draw from the reference ``N(0, prior_std^2 I)``; ``shape`` includes the event."""
        return self.prior_std * rng.normal(key, tuple(shape))

    def prior_logpdf(self, x: Array) -> Array:
        """``log N(x; 0, prior_std^2 I)`` summed over the last axis."""
        x = jnp.asarray(x)
        d = x.shape[-1]
        s2 = self.prior_std**2
        return -0.5 * jnp.sum(x**2, axis=-1) / s2 - 0.5 * d * math.log(2 * math.pi * s2)


def _vp_B(beta_min: float, beta_max: float, t) -> Array:
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def _vp_inverse_B(beta_min: float, beta_max: float, b) -> Array:
    db = beta_max - beta_min
    if db == 0:
        return b / beta_min
    return (jnp.sqrt(beta_min**2 + 2.0 * db * b) - beta_min) / db


@dataclass(frozen=True)
class VPSDE(SDE):
    """Variance-preserving SDE, ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``.

    Song et al. 2021, eq. 11; ``alpha_t = exp(-B(t)/2)``, ``sigma_t^2 = 1 - exp(-B(t))`` (eq. 29).
    The continuous limit of DDPM (Ho et al. 2020). Reference ``N(0, I)``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0
    eps: float = 1e-3

    @property
    def t_min(self) -> float:
        return self.eps

    @property
    def t_max(self) -> float:
        return self.T

    def beta(self, t) -> Array:
        return self.beta_min + jnp.asarray(t) * (self.beta_max - self.beta_min)

    def marginal_mean_coeff(self, t) -> Array:
        return jnp.exp(-0.5 * _vp_B(self.beta_min, self.beta_max, t))

    def marginal_std(self, t) -> Array:
        return jnp.sqrt(-jnp.expm1(-_vp_B(self.beta_min, self.beta_max, t)))

    def drift_coeff(self, t) -> Array:
        return -0.5 * self.beta(t)

    def diffusion(self, t) -> Array:
        return jnp.sqrt(self.beta(t))

    def noise_level(self, t) -> Array:
        return jnp.sqrt(jnp.expm1(_vp_B(self.beta_min, self.beta_max, t)))

    def time_of_noise_level(self, s) -> Array:
        return _vp_inverse_B(self.beta_min, self.beta_max, jnp.log1p(jnp.asarray(s) ** 2))

    @property
    def prior_std(self) -> float:
        return 1.0


@dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """Sub-VP SDE, ``dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dW``.

    Song et al. 2021, eq. 12; ``alpha_t = exp(-B/2)``, ``sigma_t = 1 - exp(-B)`` (eq. 29), whose
    variance is below the VP one at every t. Reference ``N(0, I)``. The schedule, times, drift
    and mean are those of :class:`VPSDE`; the noise differs.
    """

    def marginal_std(self, t) -> Array:
        return -jnp.expm1(-_vp_B(self.beta_min, self.beta_max, t))

    def diffusion(self, t) -> Array:
        b = _vp_B(self.beta_min, self.beta_max, t)
        return jnp.sqrt(-self.beta(t) * jnp.expm1(-2.0 * b))

    def noise_level(self, t) -> Array:
        return 2.0 * jnp.sinh(0.5 * _vp_B(self.beta_min, self.beta_max, t))

    def time_of_noise_level(self, s) -> Array:
        b = 2.0 * jnp.arcsinh(0.5 * jnp.asarray(s))
        return _vp_inverse_B(self.beta_min, self.beta_max, b)


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE, ``dx = sqrt(d sigma^2(t)/dt) dW``, ``sigma(t) = s_min r^t``.

    Song et al. 2021, eq. 9 and 30 (the continuous NCSN). ``alpha_t = 1``, exact variance
    ``sigma_t^2 = sigma(t)^2 - sigma_min^2``, ``g(t) = sigma(t) sqrt(2 log r)``.
    Reference ``N(0, sigma_T^2 I)``; default start time ``eps = 1e-5`` as in score_sde.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0
    eps: float = 1e-5

    @property
    def t_min(self) -> float:
        return self.eps

    @property
    def t_max(self) -> float:
        return self.T

    @property
    def _log_r(self) -> float:
        return math.log(self.sigma_max / self.sigma_min) / self.T

    def marginal_mean_coeff(self, t) -> Array:
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def marginal_std(self, t) -> Array:
        t = jnp.asarray(t, dtype=jnp.result_type(float))
        return self.sigma_min * jnp.sqrt(jnp.expm1(2.0 * self._log_r * t))

    def drift_coeff(self, t) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def diffusion(self, t) -> Array:
        t = jnp.asarray(t, dtype=jnp.result_type(float))
        return self.sigma_min * jnp.exp(self._log_r * t) * math.sqrt(2.0 * self._log_r)

    def noise_level(self, t) -> Array:
        return self.marginal_std(t)

    def time_of_noise_level(self, s) -> Array:
        s = jnp.asarray(s)
        return jnp.log1p((s / self.sigma_min) ** 2) / (2.0 * self._log_r)

    @property
    def prior_std(self) -> float:
        return math.sqrt(self.sigma_max**2 - self.sigma_min**2)


@dataclass(frozen=True)
class EDMSDE(SDE):
    """Karras et al. 2022 (EDM) schedule ``sigma(t) = t``, ``s(t) = 1``: ``dx = sqrt(2t) dW``.

    ``alpha_t = 1``, ``sigma_t = t``, ``g(t)^2 = d sigma_t^2/dt = 2t`` (Karras et al. 2022, eq. 6
    with ``sigma(t) = t``). Time equals noise level, on ``[sigma_min, sigma_max]``.
    Reference ``N(0, sigma_max^2 I)``.

    Its default grid is ``"edm"``: time is the noise level, and a grid uniform in
    ``[0.002, 80]`` spends almost every step at high noise (at 100 steps the last step goes
    from 0.8 to 0.002, and a two-mode mixture with sd 1.12 comes out with sd 0.53).
    """

    default_grid = "edm"
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    @property
    def t_min(self) -> float:
        return self.sigma_min

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def marginal_mean_coeff(self, t) -> Array:
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def marginal_std(self, t) -> Array:
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def drift_coeff(self, t) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def diffusion(self, t) -> Array:
        return jnp.sqrt(2.0 * jnp.asarray(t, dtype=jnp.result_type(float)))

    def noise_level(self, t) -> Array:
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def time_of_noise_level(self, s) -> Array:
        return jnp.asarray(s, dtype=jnp.result_type(float))

    @property
    def prior_std(self) -> float:
        return self.sigma_max


def get_sde(name: str | SDE, **kwargs) -> SDE:
    """Build an SDE by name: ``"vp"``, ``"subvp"``, ``"ve"`` or ``"edm"`` (or pass one through)."""
    if isinstance(name, SDE):
        return name
    table = {"vp": VPSDE, "subvp": SubVPSDE, "sub-vp": SubVPSDE, "ve": VESDE, "edm": EDMSDE}
    key = str(name).lower()
    if key not in table:
        raise ValueError(f"unknown sde {name!r}; expected one of {sorted(table)}")
    return table[key](**kwargs)
