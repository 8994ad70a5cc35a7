"""``ppl.smc``: tempered SMC from the prior to the posterior of a model, with log evidence."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from inference.mcmc.kernels import get_kernel
from inference.smc import tempered
from inference.smc.resampling import RESAMPLERS
from ppl import checkpoint as ppl_checkpoint
from ppl.devices import particle_sharding, select_devices
from ppl.diagnostics import warn_if_nonfinite
from ppl.inverse import smc_inverse_problem
from ppl.model import compile_model, program_fingerprint, trace_model
from ppl.posterior import Posterior
from ppl.smc_diagnostics import warn_if_smc_problems
from ppl.smc_driver import drive
from ppl.validation import (
    check_count,
    check_flag,
    check_model_keywords,
    check_numpyro_names,
    check_option,
    check_probability,
    check_seed,
    seed_int,
    seed_setting,
)

SMC_KERNELS = ("rwmh", "mala", "hmc")
NUM_MCMC_STEPS = 10  # the default; with waste_free another value would be ignored


def smc(
    model: Callable,
    *args,
    particles: int = 2000,
    seed: int = 0,
    kernel="rwmh",
    num_mcmc_steps: int = NUM_MCMC_STEPS,
    target_ess: float = 0.5,
    max_stages: int = 100,
    dense_mass: bool = False,
    waste_free: int | None = None,
    resampling: str = "systematic",
    runs: int = 1,
    log_likelihood: bool = True,
    devices=None,
    method: str = "auto",
    steps: int | None = None,
    ess_threshold: float = 0.5,
    diffusion_options: dict | None = None,
    progress_bar: bool = True,
    chunk_size: int | None = None,
    checkpoint: str | None = None,
    **model_kwargs,
) -> Posterior:
    """Sample ``model(*args, **model_kwargs)`` by adaptive tempered SMC and estimate log p(data).

    Particles start as exact prior draws (ancestral sampling of the model) and move through
    ``p(x) L(x)^beta`` with ``beta`` chosen adaptively (bisection on the ESS), resampling and
    MCMC rejuvenation at every stage; see :mod:`inference.smc.tempered` for the algorithm.

    Args:
        particles: number of particles ``N``.
        kernel: rejuvenation kernel, ``"rwmh"``, ``"mala"`` or ``"hmc"`` (or a kernel object);
            it is preconditioned by the particle covariance, its step size tuned per stage.
        num_mcmc_steps: kernel steps per particle per stage.
        target_ess: ESS ratio each new temperature is chosen to hit.
        max_stages: cap on the number of temperatures.
        dense_mass: dense particle covariance as preconditioner.
        waste_free: ``P`` for waste-free SMC (``N / P`` chains of length ``P``).
        resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``.
        runs: independent SMC runs (the ``chain`` dimension of the result).
        method, steps, ess_threshold, diffusion_options: for a model with a
            ``DiffusionPrior`` site (a Bayesian inverse problem), which is sampled by SMC
            along diffusion time instead of tempering: ``method`` is ``"auto"`` (MCGdiff for
            a linear-Gaussian observation, TDS otherwise), ``"mcgdiff"``, ``"tds"``,
            ``"afdps"`` or ``"dps"`` (biased baseline); ``steps`` the reverse-time steps;
            ``ess_threshold`` the resampling rule; ``diffusion_options`` further options of
            :func:`ppl.inverse.smc_inverse_problem`.
        devices: ``None``, an int or a list of devices over which the particles of each run
            are spread (resampling then gathers across devices); ``None`` takes every local
            device when ``particles`` divides evenly. The numbers do not depend on it.
        progress_bar: show a tqdm bar (stages, current temperature and ESS; diffusion steps
            for an inverse problem).
        chunk_size: stages (diffusion steps) per jitted chunk between bar updates; tempered
            SMC defaults to one stage per chunk and stops at the first chunk that reaches
            ``beta = 1``. The numbers do not depend on it.
        checkpoint: path of an ``.npz`` file (written atomically after every chunk, no
            pickle); a run started with an existing file resumes from it and gives the numbers
            of an uninterrupted run. Ctrl-C returns the completed stages with ``post.partial``
            set (the particles then target an intermediate temperature, with a warning).

    Returns:
        A :class:`~ppl.posterior.Posterior` with ``samples`` shaped ``(runs, particles, ...)``,
        ``log_evidence`` (log of the mean evidence over runs), per-run
        ``stats["log_marginal_likelihood"]``, and per-stage diagnostics in ``stages``
        (temperature, ESS, acceptance rate, step size, evidence increment).
    """
    check_model_keywords(model, args, smc)
    check_numpyro_names(model, model_kwargs, smc)
    check_count("particles", particles, minimum=2)
    if chunk_size is not None:
        check_count("chunk_size", chunk_size)
    check_count("runs", runs)
    check_count("num_mcmc_steps", num_mcmc_steps)
    check_count("max_stages", max_stages)
    check_probability("target_ess", target_ess)
    for name, flag in (
        ("progress_bar", progress_bar),
        ("log_likelihood", log_likelihood),
        ("dense_mass", dense_mass),
    ):
        check_flag(name, flag)
    key = check_seed(seed)
    kernel_obj = get_kernel(kernel)
    if kernel_obj.name not in SMC_KERNELS:
        raise ValueError(
            f"kernel '{kernel_obj.name}' cannot rejuvenate tempered SMC: expected one of "
            f"{SMC_KERNELS}"
        )
    # a kernel object's dense_mass asks for the dense particle covariance as ppl.smc's does
    dense_mass = dense_mass or bool(getattr(kernel_obj, "dense_mass", False))
    if waste_free is not None:
        check_count("waste_free", waste_free, minimum=2)
        if particles % waste_free:
            raise ValueError(
                f"waste_free={waste_free} must divide particles={particles} (chains of length "
                "waste_free started from particles / waste_free resampled particles)"
            )
        if num_mcmc_steps != NUM_MCMC_STEPS:
            raise ValueError(
                f"num_mcmc_steps={num_mcmc_steps} has no effect with waste_free: each chain "
                f"runs waste_free - 1 = {waste_free - 1} steps; set the chain length with "
                "waste_free and leave num_mcmc_steps out"
            )
    check_option("resampling", resampling, RESAMPLERS)
    ppl_checkpoint.check_path(checkpoint)
    spread = select_devices(devices, particles, "particles")
    compiled = compile_model(model, args, model_kwargs)
    diffusion_time = any(s.is_diffusion_prior for s in compiled.latents.values())
    given = {n: v for n, v in locals().items() if n in TEMPERING_OPTIONS + DIFFUSION_TIME_OPTIONS}
    _refuse_unused_options(given, diffusion_time)
    if diffusion_time:
        _check_diffusion_options(diffusion_options)
        return smc_inverse_problem(
            model,
            args,
            model_kwargs,
            particles=particles,
            seed=seed,
            method=method,
            steps=steps,
            ess_threshold=ess_threshold,
            resampling=resampling,
            progress_bar=progress_bar,
            chunk_size=chunk_size,
            log_likelihood=log_likelihood,
            **(diffusion_options or {}),
        )
    if compiled.scaled_latents:
        raise ValueError(
            f"latent site(s) {list(compiled.scaled_latents)} are under numpyro's scale "
            "handler: tempered SMC starts from exact prior draws and tempers from the prior, "
            "but a scaled prior density is not the law that ancestral sampling draws (the "
            "posterior comes out biased, the evidence is of another target); scale only "
            "observed sites, or use ppl.mcmc"
        )
    if compiled.masked_latents:
        raise ValueError(
            f"latent site(s) {list(compiled.masked_latents)} are masked in part "
            "(handlers.mask or .mask(m) around a latent): tempered SMC starts from exact prior "
            "draws, but a masked entry has no density, so the target is not the law ancestral "
            "sampling draws (a masked entry keeps its prior spread and drifts); mask only "
            "observed sites (padding: mask the observations, not the latents), or use ppl.mcmc"
        )
    key_prior, key_run = jax.random.split(key)
    initial = _prior_particles(compiled, key_prior, runs, particles)
    initial = jax.device_put(initial, particle_sharding(spread))

    def make_program(initial):
        return tempered.program(
            compiled.log_prior,
            compiled.log_likelihood,
            initial,
            kernel_obj,
            num_mcmc_steps=num_mcmc_steps,
            target_ess=target_ess,
            max_stages=max_stages,
            dense_mass=dense_mass,
            waste_free=waste_free,
            resampling=resampling,
        )

    def settled(records):
        # A run has settled once a step after beta = 1 is recorded (temperature NaN): that
        # step made the last resample-and-move at beta = 1; every later step is a no-op.
        return bool(np.all(np.any(np.isnan(records.aux["temperature"]), axis=1)))

    def stage_postfix(records):
        temperature = records.aux["temperature"][:, -1]
        beta = float(np.nanmin(temperature)) if np.any(np.isfinite(temperature)) else 1.0
        return {"beta": f"{beta:.3g}", "ess": f"{float(np.nanmin(records.ess[:, -1])):.0f}"}

    settings = {
        "method": "smc/tempered",
        "model": getattr(model, "__qualname__", repr(model)),
        "kernel": repr(kernel_obj),
        "seed": seed_setting(seed),
        "dim": compiled.dim,
        "num_mcmc_steps": num_mcmc_steps,
        "target_ess": target_ess,
        "dense_mass": bool(dense_mass),
        "waste_free": waste_free or 0,
        "resampling": resampling,
    }  # with max_stages, the options of make_program: the program's key and the checkpoint's
    cache_key = _cache_key(model, args, model_kwargs, settings, max_stages)
    if checkpoint is not None:
        settings["inputs"] = ppl_checkpoint.inputs_digest(model, args, model_kwargs)
    driven = drive(
        make_program,
        jax.random.split(key_run, runs),
        initial,
        particles,
        desc="tempered SMC",
        unit="stage",
        progress=progress_bar,
        chunk_size=chunk_size or 1,
        checkpoint=checkpoint,
        settings=settings,
        stop_when=settled,
        postfix=stage_postfix,
        known_length=False,
        cache_key=cache_key,
    )
    result = tempered.summarize(driven.result)
    result = jax.tree.map(np.asarray, result)
    if np.any(result.failed):
        raise FloatingPointError(
            "tempered SMC: the particle weights became undefined: the likelihood is -inf or "
            "NaN at every particle, or +inf at some (check the model and data)"
        )
    nan_likelihoods = int(np.sum(result.nan_likelihoods))
    if nan_likelihoods:
        warnings.warn(
            f"tempered SMC: {nan_likelihoods} particle(s) had a NaN log-likelihood and got "
            "weight zero: the model is undefined on part of the prior's support (a sqrt or "
            "log of a negative value), so the posterior and evidence are those of the rest",
            stacklevel=2,
        )
    if driven.interrupted:
        beta = float(np.nanmin(result.temperature[:, -1]))
        warnings.warn(
            f"tempered SMC interrupted after {driven.steps_done} stage(s): the particles target "
            f"the tempered posterior at beta={beta:.3g}, not the posterior (post.partial=True); "
            "run again with checkpoint= to resume",
            stacklevel=2,
        )
    elif not np.all(result.reached_one):
        raise RuntimeError(
            f"tempered SMC did not reach temperature 1 within max_stages={max_stages} stages "
            f"(reached {np.min(result.temperature[:, -1]):.3g}); increase max_stages (or "
            "lower target_ess: larger temperature steps, fewer stages)"
        )
    positions = np.asarray(result.particles)
    samples, pointwise = compiled.draws_from(
        positions, log_likelihood, key=jax.random.fold_in(key_prior, 1)
    )
    num_stages = int(np.max(result.num_stages))
    stages = {
        "temperature": result.temperature[:, :num_stages],
        "ess": result.ess[:, :num_stages],
        "acceptance_rate": result.acceptance_rate[:, :num_stages],
        "step_size": result.step_size[:, :num_stages],
        "log_evidence_increment": result.log_evidence_increments[:, :num_stages],
    }
    log_z = np.asarray(result.log_evidence, dtype=np.float64)
    log_evidence = float(np.logaddexp.reduce(log_z) - np.log(runs))
    post = Posterior(
        samples=samples,
        stats={
            "log_marginal_likelihood": log_z,
            "num_stages": np.asarray(result.num_stages),
        },
        log_evidence=log_evidence,
        log_likelihood=pointwise,
        observed_data=compiled.observed_data,
        stages=stages,
        site_dims=compiled.site_dims,
        compiled=compiled,
        attrs={
            "method": f"smc/tempered/{kernel_obj.name}",
            "particles": particles,
            "waste_free": waste_free or 0,
            "partial": driven.interrupted,
            "seed": seed_int(seed),
        },
    )
    warn_if_nonfinite(post.samples, "ppl.smc", stacklevel=2)
    warn_if_smc_problems(post, stacklevel=2)
    return post


def _check_diffusion_options(options):
    """``diffusion_options`` must be a dict of :func:`ppl.inverse.smc_inverse_problem`'s
    further options (those ``ppl.smc`` does not take itself)."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise TypeError(
            f"diffusion_options must be a dict of options, got {type(options).__name__}"
        )
    own = {"model", "args", "kwargs", "particles", "seed", "method", "steps", "ess_threshold"}
    own |= {"resampling", "progress_bar", "chunk_size", "log_likelihood"}
    allowed = set(inspect.signature(smc_inverse_problem).parameters) - own
    unknown = sorted(set(options) - allowed)
    if unknown:
        passed_directly = sorted(set(unknown) & own)
        hint = f" ({', '.join(passed_directly)}: pass to ppl.smc itself)" if passed_directly else ""
        raise ValueError(
            f"diffusion_options has unknown key(s) {unknown}{hint}; allowed: {sorted(allowed)}"
        )


# the options of each of ppl.smc's two samplers
TEMPERING_OPTIONS = (
    "kernel",
    "num_mcmc_steps",
    "target_ess",
    "max_stages",
    "dense_mass",
    "waste_free",
    "runs",
    "devices",
    "checkpoint",
)
DIFFUSION_TIME_OPTIONS = ("method", "steps", "ess_threshold", "diffusion_options")


def _refuse_unused_options(given: dict, diffusion_time: bool) -> None:
    """Refuse options, set away from their defaults, that the chosen sampler would ignore."""
    unused, sampler, other = (
        (TEMPERING_OPTIONS, "along diffusion time (its DiffusionPrior site)", "tempered SMC")
        if diffusion_time
        else (
            DIFFUSION_TIME_OPTIONS,
            "by tempered SMC (it has no DiffusionPrior site)",
            "a model with a DiffusionPrior site",
        )
    )
    defaults = {n: p.default for n, p in inspect.signature(smc).parameters.items()}
    ignored = [
        name
        for name in unused
        if given[name] is not defaults[name] and given[name] != defaults[name]
    ]
    if ignored:
        raise ValueError(
            f"ppl.smc: {', '.join(f'{n}=' for n in ignored)} would be ignored: this model is "
            f"sampled {sampler}, and these options are for {other}"
        )


def _cache_key(model, args, kwargs, settings: dict, max_stages: int):
    """Identity of a tempered-SMC program: the model, its data, the globals it reads and the
    settings (:func:`ppl.model.program_fingerprint`)."""
    fingerprint = program_fingerprint(model, args, kwargs)
    reused = {k: v for k, v in settings.items() if k != "seed"}  # the keys are inputs
    return (fingerprint, max_stages, *sorted(reused.items()))


def _unsampleable_sites(compiled) -> list[str]:
    """Latent sites whose distribution has no sampler (``NotImplementedError``)."""
    trace = trace_model(compiled.traceable_model, compiled.args, compiled.kwargs)
    names = []
    for name in compiled.latents:
        try:
            trace[name]["fn"].sample(jax.random.PRNGKey(0))
        except NotImplementedError:
            names.append(name)
    return names


def _prior_particles(compiled, key, runs: int, particles: int):
    """Exact prior draws of the latent sites, mapped to unconstrained space: ``(runs, N, d)``."""
    try:
        draws = Predictive(
            compiled.traceable_model,
            num_samples=runs * particles,
            return_sites=list(compiled.latents),
        )(key, *compiled.args, **compiled.kwargs)
    except NotImplementedError as err:
        raise ValueError(
            "tempered SMC starts from exact prior draws, but the prior of latent site(s) "
            f"{_unsampleable_sites(compiled)} cannot be sampled (an improper prior such as "
            "ImproperUniform has no sampler); give every latent site a proper prior"
        ) from err
    flat = jax.vmap(compiled.to_unconstrained)({k: draws[k] for k in compiled.latents})
    if not np.all(np.isfinite(np.asarray(flat))):
        raise ValueError("prior draws map to non-finite unconstrained values")
    unused = compiled.masked_out_entries()
    if unused is not None:  # exact draws of the tempered prior there: its N(0, 1) reference
        reference = jax.random.normal(jax.random.fold_in(key, 1), flat.shape, flat.dtype)
        flat = jnp.where(unused, reference, flat)
    return jnp.reshape(flat, (runs, particles, compiled.dim))
