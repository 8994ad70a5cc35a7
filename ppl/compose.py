"""Compositions of diffusion priors: annealing, products, geometric averages, guidance, OR/AND.

A :class:`Composition` is the target ``pi propto prod_i q_i^{c_i}`` of diffusion priors ``q_i``
that share one forward SDE, held as the components and their coefficients ``c_i`` (constants or
functions ``c_i(tau)`` of the normalised reverse time ``tau in [0, 1]``). The constructors are
coefficient algebra:

=====================================  =====================================================
``anneal(p, beta)``                    ``p^beta`` (``c = beta``; FKC Prop. 3.2)
``product(p1, p2, ...)``               ``p1 p2 ...`` (``c = (1, 1, ...)``; FKC Prop. 3.3)
``geometric(p1, p2, weight)``          ``p1^{1-weight} p2^weight``
``guided(cond, uncond, scale)``        classifier-free guidance ``uncond^{1-scale} cond^scale``
                                       (FKC Prop. 3.1)
``anneal(product(p1, p2), beta)``      ``(p1 p2)^beta``, the same as
                                       ``product(anneal(p1, beta), anneal(p2, beta))``
=====================================  =====================================================

and is sampled with Feynman-Kac correctors (:mod:`inference.diffusion.fkc`).
``superpose(p1, p2, ..., mode="or" | "and")`` is a :class:`Superposition`, sampled with SuperDiff
(:mod:`inference.diffusion.superdiff`): ``"or"`` the mixture ``sum_i omega_i p_i``,
``"and"`` the equal-density locus ``p_1 = p_2 = ...``.

:func:`sample_composition` is the entry point (``ppl.sample_diffusion`` dispatches compositions
to it). ``weighted=False`` runs the heuristic the correctors fix: the same SDE without weights
or resampling (plain score scaling for annealing, plain CFG, plain score sums for products,
fixed ``kappa = omega`` score averaging for superpositions).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from inference.diffusion import fkc as _fkc
from inference.diffusion import superdiff as _superdiff
from inference.smc.engine import check_unroll, nan_potentials_report
from inference.smc.resampling import RESAMPLERS
from ppl import arviz_io
from ppl.diffusion import DiffusionPrior, _check_grid
from ppl.model import callables_fingerprint
from ppl.smc_driver import drive_one
from ppl.validation import (
    check_count,
    check_flag,
    check_option,
    check_real,
    check_seed,
    seed_int,
)

__all__ = [
    "Composition",
    "Superposition",
    "CompositionSamples",
    "anneal",
    "product",
    "geometric",
    "guided",
    "superpose",
    "sample_composition",
]

Coeff = float | Callable


def _mul(a: Coeff, b: Coeff) -> Coeff:
    if not callable(a) and not callable(b):
        return float(a) * float(b)
    if not callable(a) and float(a) == 1.0:
        return b
    if not callable(b) and float(b) == 1.0:
        return a

    def c(tau):
        va = a(tau) if callable(a) else a
        vb = b(tau) if callable(b) else b
        return va * vb

    return c


def _check_beta(beta, name: str = "beta") -> None:
    if callable(beta):
        try:
            vals = np.asarray([np.asarray(beta(jnp.asarray(t))) for t in (0.0, 0.5, 1.0)], float)
        except Exception as err:
            raise ValueError(
                f"{name}(tau) must return a positive number for tau in [0, 1]; calling it raised "
                f"{type(err).__name__}: {err}"
            ) from err
        if vals.shape != (3,):
            raise ValueError(f"{name}(tau) must return a scalar; got shape {vals.shape[1:]}")
        if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
            raise ValueError(f"{name}(tau) must be > 0 on [0, 1]; got {vals} at tau = 0, 0.5, 1")
        try:  # the sampler calls it inside a compiled program, with a traced tau
            jax.eval_shape(beta, jax.ShapeDtypeStruct((), jnp.result_type(float)))
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"{name}(tau) must be traceable by jax.jit with a traced tau (jnp.where rather "
                "than if, jnp rather than float() or numpy); tracing it failed: "
                f"{type(err).__name__}: {str(err).splitlines()[0]}"
            ) from err
        return
    if isinstance(beta, bool | str):  # float() would take True and "2"
        raise TypeError(f"{name} must be a float or a callable beta(tau); got {beta!r}")
    try:
        b = float(beta)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a float or a callable beta(tau); got {beta!r}") from err
    if not (np.isfinite(b) and b > 0):
        raise ValueError(f"{name} must be > 0, got {beta!r}")


class Composition:
    """``pi propto prod_i components[i]^{coeffs[i]}`` (see the module docstring).

    Attributes:
        components: the :class:`DiffusionPrior` s (distinct objects; repeats are merged).
        coeffs: their coefficients (floats or callables of ``tau``).
        beta: the common annealing exponent (used by ``noise="tempered"``), ``None`` if the
            factors are annealed differently.
        kind: ``"anneal"``, ``"product"``, ``"geometric"`` or ``"guided"``.
    """

    def __init__(self, components, coeffs, beta=1.0, kind="product"):
        comps: list = []
        cs: list = []
        for p, c in zip(components, coeffs, strict=True):
            for i, q in enumerate(comps):
                if q is p:
                    cs[i] = _add(cs[i], c)
                    break
            else:
                comps.append(p)
                cs.append(c)
        self.components = tuple(comps)
        self.coeffs = tuple(cs)
        self.beta = beta
        self.kind = kind

    @property
    def sde(self):
        return self.components[0].sde

    @property
    def dim(self) -> int:
        return self.components[0].dim

    def __repr__(self) -> str:
        cs = ", ".join("callable" if callable(c) else f"{c:g}" for c in self.coeffs)
        return f"Composition(kind={self.kind!r}, {len(self.components)} components, c=({cs}))"


def _add(a: Coeff, b: Coeff) -> Coeff:
    if not callable(a) and not callable(b):
        return float(a) + float(b)
    return lambda tau: (a(tau) if callable(a) else a) + (b(tau) if callable(b) else b)


class Superposition:
    """SuperDiff superposition of diffusion priors: ``mode="or"`` (mixture with ``weights``,
    softmax ``temperature``) or ``mode="and"`` (equal densities)."""

    def __init__(self, components, mode, weights, temperature):
        self.components = tuple(components)
        self.mode = mode
        self.weights = weights
        self.temperature = temperature

    @property
    def sde(self):
        return self.components[0].sde

    @property
    def dim(self) -> int:
        return self.components[0].dim

    def __repr__(self) -> str:
        return f"Superposition(mode={self.mode!r}, {len(self.components)} components)"


def _as_composition(p, name: str) -> Composition:
    if isinstance(p, Composition):
        return p
    if isinstance(p, DiffusionPrior):
        return Composition((p,), (1.0,), 1.0, "product")
    raise TypeError(
        f"{name} must be a ppl.DiffusionPrior or a composition of them (anneal/product/"
        f"geometric/guided); got {type(p).__name__}"
    )


def _check_compatible(named: Sequence[tuple[str, Any]]) -> None:
    """All components share the SDE and event shape, else ``ValueError`` naming the argument."""
    first_name, first = named[0]
    ref = first.components[0]
    for name, comp in named:
        for p in comp.components:
            if p.sde != ref.sde:
                raise ValueError(
                    f"{name} uses the SDE {p.sde!r} but {first_name} uses {ref.sde!r}: composed "
                    "diffusion priors must share one forward SDE"
                )
            if tuple(p.event_shape) != tuple(ref.event_shape):
                raise ValueError(
                    f"{name} has event shape {tuple(p.event_shape)} but {first_name} has "
                    f"{tuple(ref.event_shape)}: composed diffusion priors must share it"
                )


def _common_beta(betas):
    b0 = betas[0]
    for b in betas[1:]:
        if b is b0:
            continue
        if callable(b) or callable(b0) or b is None or b0 is None or float(b) != float(b0):
            return None
    return b0


def anneal(prior, beta) -> Composition:
    """``prior^beta`` (``beta > 0`` a float or a callable ``beta(tau)``); on a composition every
    coefficient is multiplied by ``beta``."""
    comp = _as_composition(prior, "prior")
    _check_beta(beta)
    new_beta = None if comp.beta is None else _mul(comp.beta, beta)
    return Composition(
        comp.components, tuple(_mul(c, beta) for c in comp.coeffs), new_beta, "anneal"
    )


def product(*priors) -> Composition:
    """``p1 p2 ...`` of diffusion priors or compositions (coefficients concatenated)."""
    if len(priors) < 2:
        raise ValueError(f"product needs at least two priors, got {len(priors)}")
    named = [(f"priors[{i}]", _as_composition(p, f"priors[{i}]")) for i, p in enumerate(priors)]
    _check_compatible(named)
    comps = [q for _, c in named for q in c.components]
    coeffs = [k for _, c in named for k in c.coeffs]
    return Composition(comps, coeffs, _common_beta([c.beta for _, c in named]), "product")


def geometric(p1, p2, weight: float) -> Composition:
    """Geometric average ``p1^{1-weight} p2^weight`` (any real ``weight``; for ``weight``
    outside ``[0, 1]`` the target must still be normalisable)."""
    c1, c2 = _as_composition(p1, "p1"), _as_composition(p2, "p2")
    _check_compatible([("p1", c1), ("p2", c2)])
    w = check_real("weight", weight)
    comps = list(c1.components) + list(c2.components)
    coeffs = [_mul(c, 1.0 - w) for c in c1.coeffs] + [_mul(c, w) for c in c2.coeffs]
    return Composition(comps, coeffs, 1.0, "geometric")


def guided(cond, uncond, scale: float) -> Composition:
    """Classifier-free guidance ``uncond^{1-scale} cond^scale`` (``scale >= 0``; FKC Prop. 3.1):
    ``geometric(uncond, cond, weight=scale)``."""
    w = check_real("scale (guidance weight)", scale, low=0.0)
    cu, cc = _as_composition(uncond, "uncond"), _as_composition(cond, "cond")
    _check_compatible([("uncond", cu), ("cond", cc)])
    out = geometric(uncond, cond, w)
    out.kind = "guided"
    return out


def superpose(*priors, mode: str = "or", weights=None, temperature: float = 1.0) -> Superposition:
    """SuperDiff superposition of diffusion priors (not compositions).

    Args:
        priors: two or more :class:`DiffusionPrior` sharing SDE and event shape.
        mode: ``"or"`` (mixture) or ``"and"`` (equal densities).
        weights: OR mixture weights ``omega`` (normalised; default uniform).
        temperature: OR softmax temperature ``T`` (1: exact mixture).

    ``weights`` and ``temperature`` shape the OR mixture only: AND refuses them (the equal-
    density condition has neither).
    """
    if len(priors) < 2:
        raise ValueError(f"superpose needs at least two priors, got {len(priors)}")
    for i, p in enumerate(priors):
        if not isinstance(p, DiffusionPrior):
            raise TypeError(f"priors[{i}] must be a ppl.DiffusionPrior, got {type(p).__name__}")
    _check_compatible([(f"priors[{i}]", _as_composition(p, "")) for i, p in enumerate(priors)])
    if mode not in ("or", "and"):
        raise ValueError(f"mode must be 'or' or 'and', got {mode!r}")
    if weights is not None:
        try:
            w = np.asarray(weights, float)
        except (TypeError, ValueError):
            raise ValueError(
                f"weights must be {len(priors)} positive numbers, got {weights!r}"
            ) from None
        if w.shape != (len(priors),) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"weights must be {len(priors)} positive numbers, got {weights!r}")
        weights = w / w.sum()
    temperature = check_real("temperature", temperature, 0.0, low_open=True)
    if mode == "and":
        ignored = [
            n
            for n, given in (("weights", weights is not None), ("temperature", temperature != 1.0))
            if given
        ]
        if ignored:
            raise ValueError(
                f"superpose(mode='and') takes no {' or '.join(f'{n}=' for n in ignored)}: "
                "weights and temperature shape the OR mixture only"
            )
    return Superposition(priors, mode, weights, temperature)


class CompositionSamples(NamedTuple):
    """Result of :func:`sample_composition`.

    Attributes:
        samples: ``(num_samples, d)`` equally weighted draws (FKC resamples once at the end).
        log_normalizer: FKC estimate of ``log int prod_i q_i^{c_i}`` (normalised ``q_i``);
            ``None`` for superpositions and unweighted runs.
        ess: ``(steps,)`` effective sample size after each step (``None`` for superpositions).
        kappa: ``(steps, M)`` particle-mean SuperDiff weights (``None`` for FKC).
        method: ``"fkc"``, ``"heuristic"``, ``"superdiff_or"``, ``"superdiff_and"`` or
            ``"score_average"``.
        steps, seed: the settings used.
        raw: the underlying :class:`FKCResult` / :class:`SuperDiffResult`.
        partial: the run was interrupted (Ctrl-C) before the last step.
    """

    samples: Array
    log_normalizer: float | None
    ess: Array | None
    kappa: Array | None
    method: str
    steps: int
    seed: int
    raw: Any
    partial: bool = False

    def to_arviz(self, var_name: str = "x"):
        """ArviZ data with a ``posterior`` group, dims ``(chain=1, draw, {var_name}_dim)``
        (an ``xarray.DataTree`` on ArviZ 1.x, ``InferenceData`` on 0.2x)."""
        attrs = {"method": self.method, "steps": self.steps, "seed": self.seed}
        if self.log_normalizer is not None:
            attrs["log_normalizer"] = float(self.log_normalizer)
        return arviz_io.draws_to_arviz(self.samples, var_name, attrs)

    def summary(self, var_name: str = "x", **kwargs):
        """ArviZ's summary table: mean, sd and credible interval of each coordinate
        (``kind="stats"``: resampled particles form no chain, so ESS and R-hat do not apply)."""
        return arviz_io.draws_summary(self.to_arviz(var_name), **kwargs)

    def diagnose(self, **thresholds):
        """The SMC checks of :func:`ppl.smc_diagnostics.diagnose_smc` on these particles (the
        ESS along diffusion time, distinct particles at the end, an interrupted run), with
        the unweighted ``"heuristic"`` flagged as biased; ``print()`` the result."""
        from ppl.posterior import Posterior
        from ppl.smc_diagnostics import diagnose_smc

        stages = {} if self.ess is None else {"ess": np.asarray(self.ess)[None]}
        post = Posterior(
            samples={"x": np.asarray(self.samples)[None]},
            stages=stages,
            attrs={"method": f"smc/diffusion/{self.method}", "partial": self.partial},
        )
        return diagnose_smc(post, **thresholds)


def _log_q_fns(components):
    fns = [getattr(p, "log_density", None) for p in components]
    return None if any(f is None for f in fns) else fns


def sample_composition(
    target,
    num_samples: int,
    steps: int = 500,
    seed: int = 0,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    noise: str | float = "target_score",
    weighted: bool = True,
    window: tuple[float, float] | None = None,
    grid: str | None = None,
    progress_bar: bool = True,
    chunk_size: int | None = None,
    resample_every: int = 1,
    unroll: int | bool = 1,
) -> CompositionSamples:
    """Sample a composition with FKC, or a superposition with SuperDiff.

    Args:
        target: a :class:`Composition`, :class:`Superposition` or plain ``DiffusionPrior``.
        num_samples: number of particles / returned samples.
        steps: Euler-Maruyama steps on the ``grid`` time grid.
        seed: integer seed.
        resampling: engine resampler name (``"systematic"``, ``"multinomial"``, ...).
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1.0`` every step.
        noise: ``"target_score"`` (default, ``zeta = 1``, stable), ``"tempered"``
            (``zeta^2 = 1/beta``; warns for ``beta > 2``), or a number ``zeta > 0``: the
            proposal noise is ``zeta g``. ``zeta = sqrt(3)`` is the better choice for strong
            annealing (``beta`` about 5 and above): with ``zeta = 1`` the particles are too
            narrow and the weights nearly degenerate there (see
            :func:`inference.diffusion.fkc.noise_factor`).
        weighted: ``False`` runs the heuristic baseline (no weights, no resampling).
        window: FKC active resampling window ``(tau_min, tau_max)`` in ``[0, 1]``.
        grid: ``"uniform"`` or ``"edm"``; default the components' grid where they agree
            (``DiffusionPrior(grid=...)``, itself defaulting to the SDE's), else the SDE's.
        progress_bar: tqdm bar over the FKC steps (the run is jitted in chunks between
            updates; the numbers do not depend on ``chunk_size``). Ctrl-C returns the
            particles reached so far with ``partial=True`` and a warning.
        chunk_size: steps per jitted chunk (default: a twentieth of the run with a bar).
        resample_every: FKC decides whether to resample only every ``k`` steps (the weights
            and ESS are still recorded at every step); fewer decisions cost less per step on
            a GPU, more weight degeneracy between them.
        unroll: ``True`` compiles each block of ``resample_every`` FKC steps as straight-line
            code (``lax.scan``'s ``unroll``; an integer unrolls that many steps): no inner loop
            on a GPU, ``resample_every`` copies of the score network to compile. The numbers
            agree to rounding. On a GPU ``resample_every=10, unroll=True`` brings FKC to
            1.05-1.22x the plain reverse SDE (README, FKC cost).

    Exact noised log-densities are used for the initial weight when every component provides
    ``log_density(x, t)`` (e.g. :func:`models.gmm_targets.exact_prior`).
    """
    if isinstance(target, DiffusionPrior):
        target = _as_composition(target, "target")
    if not isinstance(target, Composition | Superposition):
        raise TypeError(
            f"target must be a DiffusionPrior, Composition or Superposition; got "
            f"{type(target).__name__}"
        )
    n, k = check_count("num_samples", num_samples), check_count("steps", steps)
    check_flag("progress_bar", progress_bar)
    key = check_seed(seed)
    if not callable(resampling):
        check_option("resampling", resampling, RESAMPLERS)
    ess_threshold = check_real("ess_threshold", ess_threshold, 0.0, 1.0)
    resample_every = check_count("resample_every", resample_every)
    unroll = check_unroll(unroll)
    if isinstance(noise, str):
        check_option("noise", noise, ("target_score", "tempered"))
    else:
        check_real("noise (the noise factor zeta)", noise, 0.0, None, low_open=True)
    if not isinstance(weighted, bool | np.bool_):
        raise TypeError(f"weighted must be True or False, got {weighted!r}")
    if window is not None:
        if not isinstance(window, tuple | list) or len(window) != 2:
            raise ValueError(f"window must be a pair (tau_min, tau_max), got {window!r}")
        lo = check_real("window[0] (tau_min)", window[0], 0.0, 1.0)
        hi = check_real("window[1] (tau_max)", window[1], 0.0, 1.0)
        if lo > hi:
            raise ValueError(f"window must satisfy tau_min <= tau_max, got {window!r}")
        window = (lo, hi)
    if grid is None:  # the components' grid where they agree, else the SDE's
        grids = {p.grid for p in target.components}
        grid = grids.pop() if len(grids) == 1 else target.sde.default_grid
    grid = _check_grid(grid)
    comps = target.components
    score_fns = [p.score_fn for p in comps]
    log_q = _log_q_fns(comps)
    sde, dim = target.sde, target.dim

    if isinstance(target, Superposition):
        given = {
            "resampling": resampling,
            "ess_threshold": ess_threshold,
            "noise": noise,
            "window": window,
            "resample_every": resample_every,
        }
        defaults = inspect.signature(sample_composition).parameters
        ignored = [n for n, v in given.items() if v != defaults[n].default]
        if unroll is True or unroll != 1:  # True == 1 in Python
            ignored.append("unroll")
        if ignored:
            raise ValueError(
                f"{', '.join(f'{n}=' for n in ignored)} would be ignored: a superposition is "
                "sampled by SuperDiff, which neither weights nor resamples its particles; "
                "these options are for FKC compositions (anneal, product, geometric, guided)"
            )
        mode = target.mode if weighted else "average"
        method = {"or": "superdiff_or", "and": "superdiff_and", "average": "score_average"}[mode]

        program = _superdiff.superdiff_program(
            score_fns, sde, dim, k, mode, target.weights, target.temperature, grid, log_q
        )
        driven = drive_one(
            program,
            key,
            n,
            desc=method,
            progress=progress_bar,
            chunk_size=chunk_size,
            cache_key=("superdiff", target, _reads(target), mode, grid, k),
        )
        res = _superdiff.superdiff_result(jax.tree.map(jnp.asarray, driven.result))
        if driven.interrupted:
            warnings.warn(
                f"{method} interrupted after {driven.steps_done} of {k} steps: the particles "
                "are still noisy (partial=True)",
                stacklevel=2,
            )
        _check_finite(res.samples, method)
        return CompositionSamples(
            res.samples, None, None, res.kappa, method, k, seed_int(seed), res, driven.interrupted
        )

    _fkc.noise_factor(noise, target.beta if noise == "tempered" else None)  # warns here
    c0 = _fkc.coefficient_values(target.coeffs, 0.0)
    if not float(jnp.sum(c0)) > 0:
        raise ValueError(
            f"the coefficients must sum to a positive number at tau=0 (got {float(jnp.sum(c0))})"
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tempered-noise warning was given above
        program = _fkc.fkc_program(
            score_fns,
            target.coeffs,
            sde,
            dim,
            k,
            noise=noise,
            beta=target.beta,
            resampling=resampling,
            ess_threshold=ess_threshold,
            window=window,
            weighted=weighted,
            grid=grid,
            log_q_T=log_q,
            resample_at_end=True,
            resample_every=resample_every,
            unroll=unroll,
        )
        driven = drive_one(
            program,
            key,
            n,
            desc="fkc" if weighted else "heuristic",
            progress=progress_bar,
            chunk_size=chunk_size,
            cache_key=(
                "fkc",
                target,
                _reads(target),
                k,
                noise,
                resampling,
                ess_threshold,
                window,
                weighted,
                grid,
                resample_every,
                unroll,
            ),
        )
    res = _fkc.fkc_result(jax.tree.map(jnp.asarray, driven.result), weighted)
    if driven.interrupted:
        warnings.warn(
            f"FKC interrupted after {driven.steps_done} of {k} steps: the particles are still "
            "noisy (partial=True)",
            stacklevel=2,
        )
    _check_finite(res.samples, "fkc")
    nan_weights = nan_potentials_report(res.smc) if weighted else None
    if nan_weights:  # a score that is NaN somewhere: that region is silently cut out
        warnings.warn(f"FKC: {nan_weights}", stacklevel=3)
    log_z = float(res.log_normalizer) if weighted else None
    if weighted and bool(res.smc.failed):
        raise FloatingPointError(
            f"FKC failed: all particle weights vanished at step {int(res.smc.failed_step)}"
        )
    method = "fkc" if weighted else "heuristic"
    result = CompositionSamples(
        res.samples, log_z, res.ess, None, method, k, seed_int(seed), res, driven.interrupted
    )
    if weighted and not driven.interrupted:
        diagnosis = result.diagnose()
        if not diagnosis.ok:  # e.g. too few steps: one particle left, log Z off by 1e8
            warnings.warn(
                "FKC sampling problems (print(res.diagnose()) for the report; the samples and "
                "log_normalizer are unreliable):\n"
                + "\n".join(f"- {p}" for p in diagnosis.problems),
                stacklevel=3,
            )
    return result


def _reads(target):
    """What the programs of ``target`` read beyond its identity: its components' score
    functions and any coefficient of diffusion time, each with the globals, closures and
    attributes it reads (:func:`ppl.model.callables_fingerprint`), so that changing one
    builds a new program rather than reusing the stale one."""
    components = getattr(target, "components", ())
    coefficients = getattr(target, "coeffs", ())
    return callables_fingerprint(*(p.score_fn for p in components), *coefficients)


def _check_finite(x, method: str) -> None:
    if not bool(jnp.all(jnp.isfinite(x))):
        raise FloatingPointError(
            f"{method} produced non-finite samples; try more steps or check the score models"
        )
