"""Bayesian inverse problems with a diffusion-model prior, sampled by SMC along diffusion time.

A model ``x = sample("x", prior)`` with ``prior`` a :class:`ppl.diffusion.DiffusionPrior` and
observed sites depending on ``x`` is a Bayesian inverse problem. :func:`smc_inverse_problem`
(called by ``ppl.smc`` for such models) recognises its structure and runs one of the
Feynman-Kac samplers of :mod:`inference.diffusion.posterior` on the SMC engine:

* **linear-Gaussian** observations, every observed site a ``Normal(A x + b, sigma)`` (possibly
  masked, indexed, expanded or batched; ``A`` recovered by probing the mean with
  ``jax.jacfwd`` at two random points, the scale checked independent of ``x``): stacked and
  whitened to ``y_w = A_w x + e``, ``e ~ N(0, I)``, and sampled gradient-free by **MCGdiff**
  (``method="auto"``);
* any other differentiable likelihood (non-linear mean, non-Gaussian observations,
  ``factor`` terms): **TDS** (``method="auto"``);
* ``method="afdps"``: AFDPS; ``method="dps"``: the biased DPS baseline (independent particles,
  no weights, no evidence).

The result is a :class:`ppl.posterior.Posterior` whose draws are the (resampled, equally
weighted) particles, with ``log_evidence`` (an estimate of ``log p(y)`` under the model's
discretised prior) and the per-step ESS / evidence increments in ``stages``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import Normal
from numpyro.distributions.distribution import (
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)

from inference.diffusion.posterior.afdps import POTENTIALS, potential_schedule
from inference.diffusion.posterior.afdps import afdps as _afdps
from inference.diffusion.posterior.common import default_grid
from inference.diffusion.posterior.dps import dps as _dps
from inference.diffusion.posterior.mcgdiff import mcgdiff as _mcgdiff
from inference.diffusion.posterior.mcgdiff import mcgdiff_grid, svd_observation
from inference.diffusion.posterior.tds import gaussian_twist, tds_mala_rejuvenation
from inference.diffusion.posterior.tds import tds as _tds
from inference.smc import engine
from inference.smc.resampling import RESAMPLERS
from ppl.diagnostics import warn_if_nonfinite
from ppl.model import (
    callables_fingerprint,
    compile_model,
    observation_mask,
    program_fingerprint,
    trace_model,
)
from ppl.posterior import Posterior
from ppl.smc_diagnostics import warn_if_smc_problems
from ppl.smc_driver import drive_one
from ppl.validation import (
    check_count,
    check_option,
    check_probability,
    check_real,
    check_seed,
)

__all__ = ["smc_inverse_problem", "InverseProblem", "analyse", "METHODS"]

METHODS = ("auto", "mcgdiff", "tds", "afdps", "dps")
DEFAULT_STEPS = {"mcgdiff": 100, "tds": 100, "afdps": 500, "dps": 100}


def _is_diffusion_prior(fn) -> bool:
    if getattr(fn, "is_diffusion_prior", False):
        return True
    from ppl.diffusion import DiffusionPrior

    return isinstance(fn, DiffusionPrior)


@dataclass
class InverseProblem:
    """The structure found in a model (see :func:`analyse`).

    Attributes:
        site: name of the DiffusionPrior site; ``prior`` its distribution; ``dim`` its size.
        log_lik: ``x (d,) -> log p(y | x)`` summed over every observed site and factor.
        linear: whether every observation is linear-Gaussian in ``x``.
        A, y, sigma: the stacked observation ``y = A x + b + sigma e`` with ``b`` subtracted
            (raw rows, masked rows dropped); ``A_w = A / sigma``, ``y_w = y / sigma``.
        log_const: ``log p`` of the observed rows that do not depend on ``x``.
    """

    site: str
    prior: object
    dim: int
    log_lik: Callable
    linear: bool
    A: np.ndarray | None = None
    y: np.ndarray | None = None
    sigma: np.ndarray | None = None
    log_const: float = 0.0
    reason: str = ""

    @property
    def A_w(self):
        return self.A / self.sigma[:, None]

    @property
    def y_w(self):
        return self.y / self.sigma

    def log_lik_linear(self, x):
        """Closed-form ``log p(y | x)`` of the linear-Gaussian structure (equals ``log_lik``)."""
        A_w, y_w = jnp.asarray(self.A_w, x.dtype), jnp.asarray(self.y_w, x.dtype)
        r = y_w - A_w @ x
        const = self.log_const - float(np.sum(np.log(self.sigma)))
        return -0.5 * jnp.sum(r**2) - 0.5 * r.shape[0] * math.log(2 * math.pi) + const


def _observed_sites(model, args, kwargs, site, x):
    substituted = handlers.substitute(handlers.seed(model, rng_seed=0), data={site: x})
    trace = handlers.trace(substituted).get_trace(*args, **kwargs)
    return [s for s in trace.values() if s["type"] == "sample" and s["is_observed"]]


def _site_log_prob(s):
    lp = s["fn"].log_prob(s["value"])
    if s.get("mask") is not None:
        lp = jnp.where(s["mask"], lp, 0.0)
    if s.get("scale") is not None:
        lp = s["scale"] * lp
    return jnp.sum(lp)


def _unwrap_normal(fn):
    """The ``Normal`` under Independent / Expanded / Masked wrappers, else None (the masks are
    read by :func:`ppl.model.observation_mask`)."""
    while isinstance(fn, Independent | MaskedDistribution | ExpandedDistribution):
        fn = fn.base_dist
    return fn if type(fn) is Normal else None


def _linear_structure(model, args, kwargs, site, dim, dtype):
    """Probe every observed site for ``Normal(A x + b, sigma)``; return rows or a reason."""

    def sites_at(x):
        return _observed_sites(model, args, kwargs, site, x)

    x0 = jnp.zeros(dim, dtype)
    base = sites_at(x0)
    rows_A, rows_y, rows_s, log_const = [], [], [], 0.0
    rng = np.random.default_rng(0)
    p1 = rng.normal(size=dim) * 2.0
    # antipodal and independent probes: a piecewise-linear mean (|x|, relu) is not linear
    probes = [jnp.asarray(p, dtype) for p in (p1, -p1, rng.normal(size=dim) * 2.0)]
    for index, s in enumerate(base):
        name = s["name"]
        if s.get("infer", {}).get("is_auxiliary") or s.get("scale") is not None:
            return None, f"site '{name}' is a factor or scaled"
        if _unwrap_normal(s["fn"]) is None:
            return None, f"site '{name}' is a {type(s['fn']).__name__}, not a Normal"
        # numpyro broadcasts obs= against the batch and event shape (a scalar y for
        # Normal(A @ x) with A of shape (1, d)); work on the broadcast shape
        event = tuple(s["fn"].event_shape)
        shape = np.broadcast_shapes(np.shape(s["value"]), tuple(s["fn"].batch_shape) + event)
        value = jnp.broadcast_to(jnp.asarray(s["value"], dtype), shape)

        def parts(x, index=index, shape=shape):
            n = _unwrap_normal(sites_at(x)[index]["fn"])
            loc = jnp.broadcast_to(n.loc, shape).reshape(-1)
            scale = jnp.broadcast_to(n.scale, shape).reshape(-1)
            return loc, scale

        J = [jax.jacfwd(lambda x: parts(x)[0])(p) for p in probes]
        Js = jax.jacfwd(lambda x: parts(x)[1])(probes[0])
        b, sig = parts(x0)
        tol = 1e-4 * (1.0 + float(jnp.max(jnp.abs(J[0]))))
        if not all(
            np.allclose(J[0], Ji, atol=tol)
            and np.allclose(parts(p)[0], b + J[0] @ p, atol=tol * 10)
            for Ji, p in zip(J, probes, strict=True)
        ):
            return None, f"the mean of site '{name}' is not linear in the diffusion prior"
        if not np.allclose(Js, 0.0) or not np.allclose(parts(probes[1])[1], sig):
            return None, f"the scale of site '{name}' depends on the diffusion prior"
        keep = observation_mask(s["fn"], shape)  # .mask(m) at any level, obs_mask
        if s.get("mask") is not None:  # handlers.mask, over the batch dimensions
            site_mask = np.asarray(s["mask"], bool)
            keep = keep & np.broadcast_to(
                site_mask.reshape(site_mask.shape + (1,) * len(event)), shape
            )
        keep = keep.reshape(-1)
        A = np.asarray(J[0])[keep]
        yv = np.asarray(value).reshape(-1)[keep] - np.asarray(b)[keep]
        sv = np.asarray(sig)[keep]
        dep = np.any(A != 0.0, axis=1)
        if np.any(~dep):
            r = yv[~dep] / sv[~dep]
            log_const += float(np.sum(-0.5 * r**2 - np.log(sv[~dep]) - 0.5 * math.log(2 * math.pi)))
        rows_A.append(A[dep])
        rows_y.append(yv[dep])
        rows_s.append(sv[dep])
    if not rows_A or sum(a.shape[0] for a in rows_A) == 0:
        return None, "no observation depends on the diffusion prior"
    A = np.concatenate(rows_A)
    return (A, np.concatenate(rows_y), np.concatenate(rows_s), log_const), ""


def analyse(model, args=(), kwargs=None) -> InverseProblem:
    """Find the DiffusionPrior site and classify the observations of ``model``.

    Raises:
        ValueError: no or several DiffusionPrior sites, another latent site, a DiffusionPrior
            site with a batch or sample shape, or no observed site.
    """
    kwargs = dict(kwargs or {})
    trace = trace_model(model, args, kwargs)
    priors = [
        (n, s)
        for n, s in trace.items()
        if s["type"] == "sample" and not s["is_observed"] and _is_diffusion_prior(s["fn"])
    ]
    others = [
        n
        for n, s in trace.items()
        if s["type"] == "sample" and not s["is_observed"] and not _is_diffusion_prior(s["fn"])
    ]
    if len(priors) != 1:
        raise ValueError(
            "an inverse problem needs exactly one DiffusionPrior site; found "
            f"{[n for n, _ in priors] or 'none'}"
        )
    if others:
        imputed = [n for n in others if n.endswith("_unobserved")]
        hint = (
            f" ({imputed} come from obs_mask=: for missing observations put the mask on the "
            "distribution instead, dist.Normal(A @ x, sigma).mask(m), or use handlers.mask; "
            "masked entries may hold NaN)"
            if imputed
            else ""
        )
        raise ValueError(
            f"latent site(s) {others} besides the DiffusionPrior site are not supported by the "
            f"diffusion posterior samplers; observe or marginalise them{hint}"
        )
    name, site = priors[0]
    prior = site["fn"]
    dim = int(prior.event_shape[0])
    if tuple(np.shape(site["value"])) != (dim,):
        raise ValueError(
            f"DiffusionPrior site '{name}' must have shape ({dim},) (no plates or sample_shape); "
            f"got {tuple(np.shape(site['value']))}"
        )
    observed = [n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]]
    if not observed:
        raise ValueError(
            f"the model has no observed site: nothing to condition the prior '{name}' on; use "
            "ppl.sample_diffusion to sample the prior"
        )

    def log_lik(x):
        return sum(_site_log_prob(s) for s in _observed_sites(model, args, kwargs, name, x))

    dtype = jnp.result_type(float)
    structure, reason = _linear_structure(model, args, kwargs, name, dim, dtype)
    if structure is None:
        return InverseProblem(name, prior, dim, log_lik, False, reason=reason)
    A, y, sigma, log_const = structure
    return InverseProblem(name, prior, dim, log_lik, True, A, y, sigma, log_const)


AFDPS_MAX_STIFFNESS = 0.5
# the rescaled AFDPS potential's likelihood scale, as a fraction of sigma / |A|_2 (whitened:
# 1 / |A_w|_2; 1 for a likelihood without that structure): half the flat-prior value, so that
# the potential takes x_0's spread given x_t as twice s_t / a_t. Measured on the MCGdiff
# benchmark prior (d = 8, 1 / 4 observations, 20 problems, 400 steps): median evidence error
# 0.56 / 0.54 nats at the flat-prior value, 0.11 / 0.30 at half of it; SW 0.70 / 0.13 and
# 0.42 / 0.29; on the 2-d test case the SE of a run's evidence fell 5x.
AFDPS_SCALE_FACTOR = 0.5


def _check_afdps_stiffness(sde, grid_of, A_w, steps: int, potential: str, scale: float) -> None:
    """Refuse an AFDPS grid on which its Euler-Maruyama step is unstable.

    The guided drift ``H - g^2 grad mu`` of a linear-Gaussian observation, with the potential
    ``mu = -lambda log p(y | e x)``, has the stiff linear part
    ``-lambda e^2 g^2 A^T A / sigma^2 x``; the explicit step of size ``du`` damps it only while
    ``du lambda e^2 g(t)^2 |A_w|_2^2`` (``A_w = A / sigma``) stays small. Measured with the
    paper's potential (``lambda = e = 1``) on a 2-d 4-mode prior (``y = x1 + x2``, sigma = 0.5,
    2000 particles): the evidence is +476 to +684 nats off at a largest ``du g^2 |A_w|^2`` of
    1.6, +38 at 1.07, +10.9 at 0.8, +2.0 at 0.32, with the posterior mean wrong too, and
    nothing fails on the way. The rescaled potential keeps ``lambda e^2 |A_w|^2`` below
    ``1 / (a^2 kappa + s^2)`` up to its last step.
    """
    norm2 = float(np.linalg.norm(np.asarray(A_w, np.float64), ord=2) ** 2)

    def stiffness(n):
        grid = grid_of(n)
        times = np.asarray(grid, np.float64)
        du = times[:-1] - times[1:]
        g2 = np.asarray(sde.diffusion(jnp.asarray(times[:-1])), np.float64) ** 2
        lam, e = (
            np.asarray(v, np.float64) for v in potential_schedule(sde, grid, potential, scale)
        )
        # step k moves under the potential of its end point (afdps.step)
        return float(np.max(du * g2 * lam[1:] * e[1:] ** 2) * norm2)

    reached = stiffness(steps)
    if reached > AFDPS_MAX_STIFFNESS:
        needed = math.ceil(steps * reached / AFDPS_MAX_STIFFNESS)
        while stiffness(needed) > AFDPS_MAX_STIFFNESS:  # lambda at the step's end: not linear
            needed = math.ceil(1.1 * needed)
        raise ValueError(
            f"method='afdps' with steps={steps}: the Euler-Maruyama step of its guided drift is "
            f"unstable for this observation (du lambda_t e_t^2 g(t)^2 |A|^2 / sigma^2 reaches "
            f"{reached:.2f}, above {AFDPS_MAX_STIFFNESS}; the samples and evidence would be "
            f"far off): use steps >= {needed}, or method='mcgdiff' / 'tds', which have no such "
            "limit"
        )


def smc_inverse_problem(
    model: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    particles: int = 1000,
    seed=0,
    method: str = "auto",
    steps: int | None = None,
    *,
    eta: float = 1.0,
    kappa: float = 1e-4,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    dps_scale: float = 0.5,
    twist: str = "inflated",
    progress_bar: bool = True,
    chunk_size: int | None = None,
    rejuvenation: dict | None = None,
    potential: str | None = None,
    likelihood_scale: float | None = None,
    log_likelihood: bool = True,
) -> Posterior:
    """Sample the posterior of a model with a DiffusionPrior site by SMC along diffusion time.

    Args:
        model, args, kwargs: the model and its arguments.
        particles: number of particles ``N`` (the draws of the result).
        seed: int seed or PRNG key.
        method: ``"auto"`` (MCGdiff for linear-Gaussian observations, TDS otherwise),
            ``"mcgdiff"``, ``"tds"``, ``"afdps"`` or ``"dps"`` (biased baseline).
        steps: reverse-time steps (default 100; 500 for AFDPS). MCGdiff adds one per
            observation (its grid contains every ``tau_i``).
        eta: DDIM stochasticity of the reverse kernel, in ``(0, 1]`` (1: DDPM).
        kappa: MCGdiff's pinning variance.
        ess_threshold: resample when ``ESS < ess_threshold * N``.
        resampling: resampling scheme name.
        dps_scale: DPS step ``zeta'`` (normalised step of Chung et al. 2023).
        twist: TDS twist for linear-Gaussian observations, ``"inflated"``
            (``N(y; A x0_hat, sigma^2 I + r_t^2 A A^T)``) or ``"plain"``, the twist TDS gives
            any other likelihood: ``lambda_t log p(y | x0_hat)`` with the signal fraction
            ``lambda_t = a_t^2 / (a_t^2 + s_t^2)`` (1 at ``t = 0``).
        rejuvenation: TDS only: MALA moves after each resampling,
            ``{"steps": k, "step_size": h}`` (``h`` dimensionless in ``(0, 1]``) and optionally
            ``"log_prob_fn": f`` with ``f(x (N, d), t) -> log p_t(x)`` the noised prior's log
            density (then MALA targets the marginal ``p_t psi_t``; without it, the exactly
            invariant conditional of the last path state). See
            :func:`inference.diffusion.posterior.tds.tds_mala_rejuvenation`.
        potential: AFDPS only: ``"rescaled"`` (default), the likelihood of ``x / a_t``
            tempered along the path, or ``"noisy"``, the paper's Algorithm 1 (the full
            likelihood of the noisy state at every noise level); see
            :mod:`inference.diffusion.posterior.afdps`.
        likelihood_scale: AFDPS's rescaled potential only: the likelihood's standard deviation
            in the units of ``x``, which sets its tempering ``a_t^2 kappa / (a_t^2 kappa +
            s_t^2)``, ``kappa = likelihood_scale^2``. Default: ``sigma / (2 |A|_2)`` for
            ``Normal(A x + b, sigma)``, 0.5 otherwise (``AFDPS_SCALE_FACTOR``). Smaller is more
            cautious: flatter intermediate potentials, smaller evidence bias, slower to commit
            to modes.
        log_likelihood: compute the pointwise log-likelihood of the draws (for LOO / WAIC).

    Returns:
        A :class:`~ppl.posterior.Posterior`: ``samples[site]`` shaped ``(1, N, d)``,
        ``log_evidence`` (``None`` for DPS), ``stages`` with ``ess``, ``resampled``,
        ``log_evidence_increment`` and ``time`` shaped ``(1, steps)``.

    Raises:
        ValueError: unknown ``method``, ``mcgdiff`` on a model without linear-Gaussian
            observations (or with more observations than dimensions / a rank-deficient ``A``),
            a model that is not an inverse problem (see :func:`analyse`).
        FloatingPointError: every particle weight vanished at some step.
    """
    check_option("method", method, METHODS)
    check_count("particles", particles, minimum=2)
    if steps is not None:
        check_count("steps", steps)
    check_probability("eta", eta, low_open=True, high_open=False)
    kappa = check_real("kappa", kappa, 0.0, None, low_open=True)
    ess_threshold = check_real("ess_threshold", ess_threshold, 0.0, 1.0)
    if not callable(resampling):
        check_option("resampling", resampling, RESAMPLERS)
    dps_scale = check_real("dps_scale", dps_scale, 0.0, None, low_open=True)
    check_option("twist", twist, ("inflated", "plain"))
    rejuv_opts = _check_rejuvenation(rejuvenation, method)
    if potential is not None:
        if method != "afdps":
            raise ValueError(
                f"potential= applies to method='afdps' only (got method={method!r}); leave it out"
            )
        check_option("potential", potential, POTENTIALS)
    potential = "rescaled" if potential is None else potential
    if likelihood_scale is not None:
        if method != "afdps" or potential != "rescaled":
            raise ValueError(
                "likelihood_scale= applies to method='afdps' with potential='rescaled' only (got "
                f"method={method!r}, potential={potential!r}); leave it out"
            )
        likelihood_scale = check_real(
            "likelihood_scale", likelihood_scale, 0.0, None, low_open=True
        )
    key = check_seed(seed)
    kwargs = dict(kwargs or {})
    problem = analyse(model, args, kwargs)
    prior = problem.prior
    sde, score_fn, d = prior.sde, prior.score_fn, problem.dim

    full_rank = False
    if problem.linear:
        sv = np.linalg.svd(problem.A_w, compute_uv=False)
        full_rank = problem.A.shape[0] <= d and sv.min() > 1e-6 * sv.max()
    if method == "auto":
        method = "mcgdiff" if problem.linear and full_rank else "tds"
    if method == "mcgdiff" and not problem.linear:
        raise ValueError(
            "method='mcgdiff' needs linear-Gaussian observations Normal(A x + b, sigma) with "
            f"sigma independent of x, but {problem.reason}; use method='tds' or 'auto'"
        )
    if method == "mcgdiff" and not full_rank:
        raise ValueError(
            f"method='mcgdiff' needs a full-row-rank observation matrix with at most d={d} rows; "
            f"got {problem.A.shape[0]} rows of rank-deficient or too many; use method='tds'"
        )
    steps = DEFAULT_STEPS[method] if steps is None else steps
    dtype = jnp.result_type(float)
    log_lik = problem.log_lik_linear if problem.linear else problem.log_lik
    if problem.linear:
        A_w = jnp.asarray(problem.A_w, dtype)
        y_w = jnp.asarray(problem.y_w, dtype)
        log_scale = problem.log_const - float(np.sum(np.log(problem.sigma)))

    if method == "mcgdiff":
        obs = svd_observation(A_w, y_w, 1.0, kappa)
        grid = mcgdiff_grid(sde, steps, obs, prior.grid)
        fk = _mcgdiff(score_fn, sde, obs, grid, d, eta)
        shift = log_scale
    elif method == "tds":
        grid = default_grid(sde, steps, prior.grid)
        tw = None
        if problem.linear and twist == "inflated":
            tw = gaussian_twist(sde, A_w, y_w, 1.0, inflate=True)
        fk = _tds(score_fn, sde, log_lik, grid, d, eta, tw)
        shift = 0.0
    elif method == "afdps":
        grid = default_grid(sde, steps, prior.grid)
        if problem.linear:
            scale = (
                AFDPS_SCALE_FACTOR / float(np.linalg.norm(problem.A_w, ord=2))
                if likelihood_scale is None
                else likelihood_scale
            )
            _check_afdps_stiffness(
                sde,
                lambda n: default_grid(sde, n, prior.grid),
                problem.A_w,
                steps,
                potential,
                scale,
            )
            lap = float(-np.sum(problem.A_w**2))

            def log_lik_whitened(x):
                """``log N(y_w; A_w x, I)``: the density the exact start is built from (the
                potential raises it to ``lambda_t``; ``shift`` adds the rest at the end)."""
                return log_lik(x) - log_scale

            fk = _afdps(
                score_fn,
                sde,
                log_lik_whitened,
                grid,
                d,
                lambda x: jnp.asarray(lap, x.dtype),
                gaussian=(A_w, y_w, 1.0),
                potential=potential,
                likelihood_scale=scale,
            )
            shift = log_scale
        else:
            fk = _afdps(
                score_fn,
                sde,
                log_lik,
                grid,
                d,
                potential=potential,
                likelihood_scale=(
                    AFDPS_SCALE_FACTOR if likelihood_scale is None else likelihood_scale
                ),
            )
            shift = 0.0
    else:
        grid = default_grid(sde, steps, prior.grid)
        residual = None
        if problem.linear:
            A_raw = jnp.asarray(problem.A, dtype)
            y_raw = jnp.asarray(problem.y, dtype)

            def residual(x0):
                return y_raw - A_raw @ x0

        fk = _dps(score_fn, sde, log_lik, grid, d, dps_scale, eta, residual)
        shift = 0.0
    num_steps = int(grid.shape[0]) - 1
    threshold = 0.0 if method == "dps" else ess_threshold
    rejuvenate = None  # MCMC rejuvenation after resampling: the ``rejuvenation`` option
    if rejuv_opts is not None:
        if method != "tds":
            raise ValueError(
                f"rejuvenation is implemented for method='tds' only (got method={method!r}); "
                "pass method='tds'"
            )
        rejuvenate = tds_mala_rejuvenation(
            score_fn, sde, log_lik, grid, eta=eta, log_twist_fn=tw, **rejuv_opts
        )

    driven = drive_one(
        engine.Program(
            fk,
            num_steps,
            resampling=resampling,
            ess_threshold=threshold,
            rejuvenate=rejuvenate,
            resample_at_end=method != "dps",
            record_ancestors=False,  # nothing reads the (steps, N) genealogy here
        ),
        key,
        particles,
        desc=method,
        progress=progress_bar,
        chunk_size=chunk_size,
        cache_key=_cache_key(
            model,
            args,
            kwargs,
            method,
            num_steps,
            eta,
            kappa,
            threshold,
            resampling,
            dps_scale,
            twist,
            potential,
            likelihood_scale,
            rejuv_opts,
            # what the score model (a library object, taken by identity in the model's
            # fingerprint) and a rejuvenation log_prob_fn read: a changed global is a new program
            callables_fingerprint(prior.score_fn, (rejuv_opts or {}).get("log_prob_fn")),
        ),
    )
    result = driven.result
    if driven.interrupted:
        warnings.warn(
            f"{method} interrupted after {driven.steps_done} of {num_steps} diffusion steps: "
            "the particles are still noisy (post.partial=True) and the evidence is partial",
            stacklevel=2,
        )
    engine.check(result)
    nan_weights = engine.nan_potentials_report(result)
    if nan_weights:  # a score or likelihood that is NaN somewhere: that region is cut out
        warnings.warn(f"{method}: {nan_weights}", stacklevel=2)
    x = result.particles["x"] if isinstance(result.particles, dict) else result.particles
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError(
            f"{method}: non-finite particles; reduce the step size (more steps) or check the "
            "score model and likelihood"
        )
    log_evidence = None if method == "dps" else float(result.log_evidence) + shift
    samples = {problem.site: x[None]}
    samples.update(_deterministic_sites(model, args, kwargs, problem.site, x))
    pointwise = {}
    try:
        compiled = compile_model(model, args, kwargs)
        if log_likelihood:
            values = {problem.site: jnp.asarray(x)}
            pointwise = {
                k: np.asarray(v)[None] for k, v in compiled.pointwise_log_likelihood(values).items()
            }
    except Exception:  # noqa: BLE001 - the pointwise log-likelihood is an optional extra
        compiled = None
    observed = {}
    for s in _observed_sites(model, args, kwargs, problem.site, jnp.zeros(d, dtype)):
        if not s.get("infer", {}).get("is_auxiliary"):
            observed[s["name"]] = np.asarray(s["value"])
    stages = {
        "ess": np.asarray(result.ess)[None],
        "resampled": np.asarray(result.resampled, dtype=np.float64)[None],
        "log_evidence_increment": np.asarray(result.log_evidence_increments)[None],
        "time": np.asarray(grid[1:])[: driven.steps_done][None],
    }
    post = Posterior(
        samples=samples,
        stats={
            "log_marginal_likelihood": np.asarray(
                [np.nan if log_evidence is None else log_evidence]
            )
        },
        log_evidence=log_evidence,
        log_likelihood=pointwise,
        observed_data=observed,
        stages=stages,
        site_dims=dict(compiled.site_dims) if compiled is not None else {},
        compiled=compiled,
        attrs={
            "method": f"smc/diffusion/{method}",
            "particles": particles,
            "steps": num_steps,
            "structure": "linear_gaussian" if problem.linear else "general",
            "num_observations": int(problem.A.shape[0]) if problem.linear else -1,
            "min_ess": float(np.min(result.ess)),
            "partial": driven.interrupted,
        },
    )
    warn_if_nonfinite(post.samples, "ppl.smc", stacklevel=2)
    warn_if_smc_problems(post, stacklevel=2)
    return post


def _cache_key(model, args, kwargs, *settings):
    """Identity of an inverse-problem program: the model, its data, the globals it reads (an
    operator ``A``, a noise level: :func:`ppl.model.program_fingerprint`) and the settings."""
    frozen = tuple(tuple(sorted(s.items())) if isinstance(s, dict) else s for s in settings)
    return (program_fingerprint(model, args, kwargs), *frozen)


def _check_rejuvenation(rejuvenation, method):
    """Validate the ``rejuvenation`` option of :func:`smc_inverse_problem`."""
    if rejuvenation is None:
        return None
    if not isinstance(rejuvenation, dict):
        raise TypeError(
            "rejuvenation must be a dict like {'steps': 2, 'step_size': 0.5}; "
            f"got {type(rejuvenation).__name__}"
        )
    unknown = set(rejuvenation) - {"steps", "step_size", "log_prob_fn"}
    if unknown:
        raise ValueError(
            f"rejuvenation has unknown keys {sorted(unknown)}; allowed: steps, step_size, "
            "log_prob_fn"
        )
    steps = check_count("rejuvenation['steps']", rejuvenation.get("steps", 1))
    h = check_real(
        "rejuvenation['step_size']", rejuvenation.get("step_size", 0.5), 0.0, 1.0, low_open=True
    )
    f = rejuvenation.get("log_prob_fn")
    if f is not None and not callable(f):
        raise TypeError("rejuvenation['log_prob_fn'] must be callable f(x, t) -> log p_t(x)")
    if method not in ("tds", "auto"):
        raise ValueError(
            f"rejuvenation is implemented for method='tds' only (got method={method!r})"
        )
    return {"steps": steps, "step_size": h, "log_prob_fn": f}


def _deterministic_sites(model, args, kwargs, site, x):
    """Deterministic sites of the model evaluated at every particle (``(1, N, ...)``)."""
    trace = trace_model(model, args, kwargs)
    names = [n for n, s in trace.items() if s["type"] == "deterministic"]
    if not names:
        return {}

    def one(xi):
        substituted = handlers.substitute(handlers.seed(model, rng_seed=0), data={site: xi})
        tr = handlers.trace(substituted).get_trace(*args, **kwargs)
        return {n: tr[n]["value"] for n in names}

    out = jax.jit(jax.vmap(one))(jnp.asarray(x))
    return {n: np.asarray(v)[None] for n, v in out.items()}
