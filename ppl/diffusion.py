"""Pretrained score models as probability distributions.

:class:`DiffusionPrior` wraps a score model ``score_fn(x, t) ~ grad_x log p_t(x)`` (batch
convention: ``x`` of shape ``(N, d)``, scalar ``t``, output ``(N, d)``) and a forward SDE from
:mod:`inference.diffusion.sde` as a numpyro ``Distribution`` on real vectors:

* ``sample`` runs a reverse-time sampler from ``p_T`` (default Euler-Maruyama on the reverse SDE,
  Song et al. 2021 eq. 6, 500 uniform steps);
* ``log_prob`` is an *estimate*: the probability-flow ODE with the exact-trace instantaneous
  change of variables (Song et al. 2021 eq. 39; Chen et al. 2018), ``log p_{t_min}(x)`` with the
  Gaussian reference at ``t_max``. It is deterministic but carries discretisation/score error
  and costs hundreds of ``d``-fold score evaluations: do not use it inside HMC.

:func:`sample_diffusion` is the user entry point for unconditional (and, later, composed)
targets and returns :class:`DiffusionSamples` with an ArviZ export.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro.distributions import Distribution, constraints
from tqdm.auto import tqdm

from inference.diffusion.likelihood import ode_log_prob
from inference.diffusion.samplers import SAMPLERS, get_sampler, time_grid
from inference.diffusion.sde import SDE
from ppl import arviz_io
from ppl.model import callables_fingerprint
from ppl.smc_driver import PROGRESS_UPDATES
from ppl.validation import (
    check_callable,
    check_count,
    check_diffusion_time,
    check_flag,
    check_seed,
    seed_int,
)

__all__ = ["DiffusionPrior", "DiffusionSamples", "sample_diffusion"]

_METHODS = {
    "euler_maruyama": "euler_maruyama",
    "em": "euler_maruyama",
    "pc": "pc",
    "ode": "heun",
    "heun": "heun",
    "dopri5": "dopri5",
    "ddim": "ddim",
}


def _check_method(method: str, name: str = "method") -> str:
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"{name} must be one of {sorted(_METHODS)}, got {method!r}")
    return _METHODS[method]


def _check_grid(grid: str) -> str:
    if not isinstance(grid, str) or grid not in ("uniform", "edm"):
        raise ValueError(f"grid must be 'uniform' or 'edm', got {grid!r}")
    return grid


class DiffusionPrior(Distribution):
    """A score-based diffusion model as a distribution over ``R^d``.

    Args:
        score_fn: ``score_fn(x, t) -> grad_x log p_t(x)`` with ``x`` of shape ``(N, d)``, scalar
            ``t``, output ``(N, d)``; rows must not interact.
        sde: forward SDE (:class:`inference.diffusion.sde.VPSDE`, ``SubVPSDE``, ``VESDE``,
            ``EDMSDE``).
        event_shape: ``(d,)`` (an int ``d`` is accepted).
        steps: number of reverse-time steps used by :meth:`sample`.
        sampler: ``"euler_maruyama"``, ``"pc"``, ``"ode"`` (Heun on the probability-flow ODE),
            ``"dopri5"`` or ``"ddim"``.
        grid: ``"uniform"`` or ``"edm"`` (Karras rho=7) time grid; default the SDE's
            (``"edm"`` for ``EDMSDE``, whose time is the noise level, else ``"uniform"``).

    Raises ``ValueError`` at construction if ``score_fn`` does not map an ``(2, d)`` input to
    an ``(2, d)`` output (checked once with a dummy call at ``t = sde.t_max``).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    # Recognised by ppl.model: such a site is not simulated while tracing, and ppl.smc samples
    # models containing one by SMC along diffusion time.
    is_diffusion_prior = True

    def __init__(
        self,
        score_fn: Callable,
        sde: SDE,
        event_shape: tuple[int, ...] | int | None = None,
        steps: int = 500,
        sampler: str = "euler_maruyama",
        grid: str | None = None,
        *,
        validate_args: bool | None = None,
    ):
        check_callable("score_fn", score_fn, "score_fn(x, t) -> score")
        if not isinstance(sde, SDE):
            raise TypeError(
                f"sde must be an inference.diffusion.sde.SDE (VPSDE, SubVPSDE, VESDE, EDMSDE); "
                f"got {type(sde).__name__}"
            )
        if event_shape is None:
            raise ValueError("event_shape=(d,) is required: the dimension of the diffusion prior")
        if isinstance(event_shape, int | np.integer):
            event_shape = (event_shape,)
        if not isinstance(event_shape, tuple | list) or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) for s in event_shape
        ):
            raise TypeError(f"event_shape must be (d,) with an integer d >= 1; got {event_shape!r}")
        event_shape = tuple(int(s) for s in event_shape)
        if len(event_shape) != 1 or event_shape[0] < 1:
            raise ValueError(
                f"event_shape must be (d,) with d >= 1 (real vectors); got {event_shape}"
            )
        steps = check_count("steps", steps)
        self.score_fn = score_fn
        self.sde = sde
        self.steps = steps
        self.sampler = _check_method(sampler, "sampler")
        self.grid = sde.default_grid if grid is None else _check_grid(grid)
        d = event_shape[0]
        expected = (2, d)
        try:
            out = score_fn(jnp.zeros(expected, jnp.result_type(float)), sde.t_max)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"score_fn failed on a dummy input of shape {expected} at t={sde.t_max}: {err}"
            ) from err
        out_shape = tuple(jnp.shape(out))
        if out_shape != expected:
            raise ValueError(
                f"score_fn must return an array of the input's shape {expected} (batch of 2 "
                f"particles, event_shape {event_shape}); got shape {out_shape}"
            )
        if not bool(jnp.all(jnp.isfinite(out))):
            raise ValueError(
                f"score_fn returned non-finite values on a dummy input of shape {expected} at "
                f"t={sde.t_max}"
            )
        # The samplers call it under jax.jit with a traced scalar t: trace it so (no FLOPs).
        fdtype = jnp.result_type(float)
        try:
            traced = jax.eval_shape(
                score_fn, jax.ShapeDtypeStruct(expected, fdtype), jax.ShapeDtypeStruct((), fdtype)
            )
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                "score_fn must be traceable by jax.jit with a traced scalar time t (no Python "
                f"control flow on t or x); tracing it failed: {type(err).__name__}: {err}"
            ) from err
        if tuple(getattr(traced, "shape", ())) != expected:
            raise ValueError(
                f"score_fn must return an array of the input's shape {expected} for a traced t; "
                f"got {traced}"
            )
        super().__init__(batch_shape=(), event_shape=event_shape, validate_args=validate_args)
        self._sample_cache: dict = {}

    @property
    def dim(self) -> int:
        return self.event_shape[0]

    def score(self, x: Array, t) -> Array:
        """The wrapped score at noise time ``t`` for ``x`` of shape ``(..., d)``."""
        x = jnp.asarray(x)
        if x.shape[-1:] != self.event_shape:
            raise ValueError(f"x must have trailing shape {self.event_shape}; got {x.shape}")
        check_diffusion_time(self.sde, t, "t")  # concrete t in [t_min, t_max]; tracers pass
        flat = x.reshape(-1, self.dim)
        return self.score_fn(flat, t).reshape(x.shape)

    def _cached(self, cache_key, build):
        """``build()``, kept for ``cache_key`` while the score function reads the same values
        (:func:`ppl.model.callables_fingerprint`: a global or attribute it reads that changed
        gives a new program, not the stale one)."""
        cache = self.__dict__.setdefault("_sample_cache", {})
        contents = callables_fingerprint(self.score_fn)
        entry = cache.get(cache_key)
        if entry is None or entry[0] != contents:
            entry = cache[cache_key] = (contents, build())
        return entry[1]

    def _sampler_fn(self, n: int, steps: int, method: str, grid: str):
        def build():
            fn = SAMPLERS[method]
            ts = time_grid(self.sde, steps, grid)
            sde, score_fn, d = self.sde, self.score_fn, self.dim

            def run(key):
                k0, k1 = jax.random.split(key)
                x_T = sde.prior_sample(k0, (n, d))
                return fn(k1, score_fn, sde, x_T, ts)

            return jax.jit(run)

        return self._cached((n, steps, method, grid), build)

    def _segment_fns(self, n: int, steps: int, method: str, grid: str):
        """Jitted ``start(key) -> x_T`` and ``segment(key, x, first, final, length)``, which runs
        steps ``first .. first + length - 1`` of the run of :meth:`_sampler_fn` (``length``
        static; ``final``: the segment holds the last step). Chained over the grid they give
        the same numbers as the whole run (the stochastic samplers draw step ``k`` from
        ``fold_in(key, k)``)."""

        def build():
            fn = SAMPLERS[method]
            ts = time_grid(self.sde, steps, grid)
            sde, score_fn, d = self.sde, self.score_fn, self.dim
            stochastic = method in ("euler_maruyama", "pc")

            def start(key):
                return sde.prior_sample(jax.random.split(key)[0], (n, d))

            def segment(key, x, first, final, length):
                k1 = jax.random.split(key)[1]
                segment_ts = jax.lax.dynamic_slice(ts, (first,), (length + 1,))
                if stochastic:
                    return fn(k1, score_fn, sde, x, segment_ts, denoise=final, first_step=first)
                return fn(k1, score_fn, sde, x, segment_ts)

            return jax.jit(start), jax.jit(segment, static_argnums=4)

        return self._cached(("segments", n, steps, method, grid), build)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Reverse-time sampling from ``p_T``; returns ``sample_shape + (d,)``.

        ``key`` is a PRNG key (or an integer seed). Raises ``FloatingPointError`` when the
        sampler produced non-finite values (outside ``jit``; traced draws are not checked)."""
        sample_shape = _check_sample_shape(sample_shape)
        key = check_seed(key)
        n = math.prod(sample_shape)
        if n == 0:
            return jnp.zeros(sample_shape + self.event_shape)
        x = self._sampler_fn(n, self.steps, self.sampler, self.grid)(key)
        if not _all_finite(x):
            raise FloatingPointError(_non_finite_message("DiffusionPrior.sample", self.sampler))
        return x.reshape(sample_shape + self.event_shape)

    def log_prob(self, value: Array) -> Array:
        """Probability-flow ODE estimate of ``log p_{t_min}(value)`` (adaptive Dormand-Prince,
        ``rtol = atol = 1e-5``, exact trace), shape ``value.shape[:-1]``.

        Raises ``ValueError`` for non-finite ``value`` and ``FloatingPointError`` when the
        solve fails (a score that is not finite on the ODE path), outside ``jit``."""
        value = jnp.asarray(value)
        if value.shape[-1:] != self.event_shape:
            raise ValueError(
                f"value must have trailing shape {self.event_shape}; got {value.shape}"
            )
        if not _all_finite(value):
            raise ValueError("DiffusionPrior.log_prob: value holds NaN or infinite entries")
        flat = value.reshape(-1, self.dim)
        score_fn, sde = self.score_fn, self.sde
        log_prob_fn = self._cached(
            "log_prob",
            lambda: jax.jit(
                lambda y: ode_log_prob(score_fn, sde, y, divergence="exact", solver="dopri5")
            ),
        )
        lp = log_prob_fn(flat)
        if not _all_finite(lp):
            raise FloatingPointError(
                "DiffusionPrior.log_prob: the probability-flow ODE solve failed (non-finite "
                "result): the score model is not finite somewhere between t_min and t_max"
            )
        return lp.reshape(value.shape[:-1])

    def tree_flatten(self):
        return (), (self.score_fn, self.sde, self.event_shape, self.steps, self.sampler, self.grid)

    @classmethod
    def tree_unflatten(cls, aux, params):
        score_fn, sde, event_shape, steps, sampler, grid = aux
        obj = object.__new__(cls)
        obj.score_fn, obj.sde, obj.steps, obj.sampler, obj.grid = (
            score_fn,
            sde,
            steps,
            sampler,
            grid,
        )
        obj._sample_cache = {}
        Distribution.__init__(obj, batch_shape=(), event_shape=event_shape)
        return obj


class DiffusionSamples(NamedTuple):
    """Result of :func:`sample_diffusion`: ``samples`` of shape ``(num_samples, d)`` and the
    settings that produced them."""

    samples: Array
    method: str
    steps: int
    grid: str
    seed: int
    partial: bool = False

    def to_arviz(self, var_name: str = "x"):
        """ArviZ data with a ``posterior`` group, dims ``(chain=1, draw, {var_name}_dim)``
        (an ``xarray.DataTree`` on ArviZ 1.x, ``InferenceData`` on 0.2x)."""
        attrs = {"method": self.method, "steps": self.steps, "grid": self.grid, "seed": self.seed}
        return arviz_io.draws_to_arviz(self.samples, var_name, attrs)

    def summary(self, var_name: str = "x", **kwargs):
        """ArviZ's summary table: mean, sd and credible interval of each coordinate
        (``kind="stats"``; pass ``kind="all"`` for ArviZ's MCSE and ESS, which treat the draws
        as one chain: right for independent reverse-SDE draws, meaningless for particles)."""
        return arviz_io.draws_summary(self.to_arviz(var_name), **kwargs)


def sample_diffusion(
    target,
    num_samples: int,
    steps: int | None = None,
    seed: int = 0,
    method: str | None = None,
    grid: str | None = None,
    progress_bar: bool = True,
    chunk_size: int | None = None,
    **composition_kwargs,
) -> DiffusionSamples:
    """Sample a diffusion target.

    Args:
        target: a :class:`DiffusionPrior`, or a composition of them (``ppl.anneal``,
            ``ppl.product``, ``ppl.geometric``, ``ppl.guided``, ``ppl.superpose``), sampled with
            Feynman-Kac correctors / SuperDiff.
        num_samples: number of independent samples.
        steps: reverse-time steps (default: the prior's, 500).
        seed: integer seed.
        method: ``"euler_maruyama"`` (reverse SDE), ``"pc"`` (predictor-corrector), ``"ode"``
            (Heun on the probability-flow ODE), ``"ddim"``, or ``"dopri5"``; default the prior's.
        grid: ``"uniform"`` or ``"edm"``; default the prior's.
        progress_bar: tqdm bar over the reverse-time steps: the run is jitted in segments of
            ``chunk_size`` steps (default a twentieth of the run) with the same numbers as one
            call (``dopri5``, whose steps adapt to the interval, runs whole). Ctrl-C returns
            the particles reached so far, with ``partial=True`` and a warning (still noisy).
        **composition_kwargs: options forwarded to :func:`ppl.compose.sample_composition` when
            ``target`` is a composition (``Composition`` / ``Superposition``), which returns its
            own result type.

    Raises ``TypeError`` for any other target.
    """
    if not isinstance(target, DiffusionPrior):
        # ppl.compose builds on this module, hence the import here.
        from ppl.compose import Composition, Superposition, sample_composition

        if isinstance(target, Composition | Superposition):
            if grid is not None:
                _check_grid(grid)
            if method not in (None, "euler_maruyama", "em"):
                raise ValueError(
                    f"compositions are sampled with Feynman-Kac correctors on Euler-Maruyama; "
                    f"method={method!r} is not available for them"
                )
            return sample_composition(
                target,
                num_samples,
                steps=500 if steps is None else steps,
                seed=seed,
                grid=grid,
                progress_bar=progress_bar,
                chunk_size=chunk_size,
                **composition_kwargs,
            )
        raise TypeError(
            f"target must be a ppl.DiffusionPrior (or a composition of them); "
            f"got {type(target).__name__}"
        )
    if composition_kwargs:
        raise TypeError(
            f"unexpected arguments for a DiffusionPrior target: {sorted(composition_kwargs)}"
        )
    check_count("num_samples", num_samples)
    steps = check_count("steps", target.steps if steps is None else steps)
    check_flag("progress_bar", progress_bar)
    key = check_seed(seed)
    m = target.sampler if method is None else _check_method(method)
    g = target.grid if grid is None else _check_grid(grid)
    get_sampler(m)
    if chunk_size is not None:
        chunk_size = check_count("chunk_size", chunk_size)
    n = int(num_samples)
    x, done = _run_segments(target, n, int(steps), m, g, key, progress_bar, chunk_size)
    partial = done < steps
    if partial:
        warnings.warn(
            f"sample_diffusion interrupted after {done} of {steps} steps: the particles are "
            "still noisy (partial=True)",
            stacklevel=2,
        )
    if not _all_finite(x):
        raise FloatingPointError(_non_finite_message("sample_diffusion", m, steps))
    return DiffusionSamples(x, m, int(steps), g, seed_int(seed), partial)


def _check_sample_shape(sample_shape) -> tuple[int, ...]:
    """``sample_shape`` as a tuple of non-negative integers (numpyro's convention)."""
    shape = (sample_shape,) if isinstance(sample_shape, int) else sample_shape
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"sample_shape must be a tuple of integers, got {sample_shape!r}") from None
    if not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in shape):
        raise TypeError(f"sample_shape must be a tuple of integers, got {sample_shape!r}")
    if any(n < 0 for n in shape):
        raise ValueError(f"sample_shape must hold non-negative integers, got {sample_shape!r}")
    return tuple(int(n) for n in shape)


def _all_finite(x) -> bool:
    """Whether every entry of ``x`` is finite; ``True`` for a traced ``x`` (not checkable)."""
    try:
        return bool(np.all(np.isfinite(np.asarray(x))))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return True


def _non_finite_message(where: str, method: str, steps: int | None = None) -> str:
    method = {"heun": "ode"}.get(method, method)  # the name the user passed
    settings = f"method={method!r}" + ("" if steps is None else f", steps={steps}")
    if method == "dopri5":
        return (
            f"{where} produced non-finite samples ({settings}): the adaptive solver did not "
            "reach t_min (the score model is not finite somewhere on the path, or 10,000 "
            "steps were not enough); try method='ode' with a fixed number of steps"
        )
    return (
        f"{where} produced non-finite samples ({settings}); the score model may be unstable "
        "at small t, try more steps or method='ode'"
    )


def _run_segments(prior, n, steps, method, grid, key, progress, chunk_size):
    """Host loop over segments of the time grid with a tqdm bar; returns ``(x, steps done)``
    (fewer than ``steps`` after Ctrl-C; re-raised if no segment completed)."""
    start, segment = prior._segment_fns(n, steps, method, grid)
    whole = method == "dopri5" or not (progress or chunk_size)
    chunk = steps if whole else min(chunk_size or -(-steps // PROGRESS_UPDATES), steps)
    x = start(key)
    done = 0
    bar = tqdm(total=steps, desc=method, unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while done < steps:
            length = min(chunk, steps - done)
            final = jnp.asarray(done + length == steps)
            x = jax.block_until_ready(segment(key, x, jnp.int32(done), final, length))
            done += length
            bar.update(length)
    except KeyboardInterrupt:
        if done == 0:
            raise
    finally:
        bar.close()
    return x, done
