"""``ppl.mcmc``: many chains of an MCMC kernel with Stan-style warm-up, returning a Posterior.

The run is two jitted phases (warm-up with adaptation, then sampling), each a ``lax.scan``
over steps of all chains at once (``vmap``). The host drives the scan in chunks only to update
the progress bar and to keep the draws completed so far when the user presses Ctrl-C; the key
of step ``i`` is ``fold_in(key, i)``, so the numbers do not depend on the chunk size.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from inference.mcmc import adaptation
from inference.mcmc.kernels import get_kernel
from ppl import checkpoint as ppl_checkpoint
from ppl.devices import select_devices, shard_leading
from ppl.diagnostics import warn_if_nonfinite, warn_if_problems
from ppl.model import CompiledModel, compile_model, program_fingerprint, values_outside
from ppl.posterior import Posterior
from ppl.validation import (
    check_count,
    check_flag,
    check_model_keywords,
    check_numpyro_names,
    check_seed,
    seed_int,
    seed_setting,
)

PROGRESS_UPDATES = 20


def mcmc(
    model: Callable,
    *args,
    kernel="nuts",
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    progress_bar: bool = True,
    init: dict | None = None,
    log_likelihood: bool = True,
    chunk_size: int | None = None,
    devices=None,
    checkpoint: str | None = None,
    **model_kwargs,
) -> Posterior:
    """Sample the posterior of ``model(*args, **model_kwargs)`` with an MCMC kernel.

    Args:
        model: a function using numpyro primitives (a plain numpyro model runs unchanged).
        kernel: ``"nuts"``, ``"hmc"``, ``"mala"``, ``"rwmh"``, or a configured kernel object
            such as ``inference.mcmc.NUTS(target_accept=0.9, dense_mass=True)``.
        chains: number of chains, run at once (vectorised).
        warmup: warm-up iterations (step size by dual averaging, mass matrix by Stan's
            windowed schedule); discarded.
        draws: iterations kept per chain.
        seed: integer seed; the same seed gives the same draws.
        progress_bar: show a tqdm bar with the divergences so far.
        init: optional dict of constrained initial values for some or all latent sites,
            each of the site's shape (shared by the chains) or ``(chains, *shape)`` (one per
            chain); the others start at random, Stan-style in (-2, 2) on unconstrained space.
        log_likelihood: compute the pointwise log-likelihood of observed sites (for LOO).
        chunk_size: iterations per jitted chunk (default: about 1/20 of the run when the bar
            is shown, else the whole run).
        devices: where the chains run: ``None`` (all local devices when ``chains`` divides
            evenly, else one), an int (the first that many local devices) or a list of
            devices. The draws do not depend on it.
        checkpoint: a file path: the sampler state and the draws so far are written there
            (atomically, ``.npz``, no pickle) after every chunk, and a run started with an
            existing checkpoint of the same settings resumes from it, giving exactly the
            draws of an uninterrupted run. Combine with ``chunk_size`` to choose how often.

    Returns:
        A :class:`~ppl.posterior.Posterior`. Pressing Ctrl-C during sampling returns the draws
        completed so far, with ``post.partial`` set.
    """
    check_model_keywords(model, args, mcmc)
    check_numpyro_names(model, model_kwargs, mcmc)
    check_count("chains", chains)
    check_count("warmup", warmup, minimum=0)
    check_count("draws", draws)
    check_flag("progress_bar", progress_bar)
    check_flag("log_likelihood", log_likelihood)
    key = check_seed(seed)
    if chunk_size is not None:
        check_count("chunk_size", chunk_size)
    ppl_checkpoint.check_path(checkpoint)
    kernel_obj = get_kernel(kernel)
    chain_devices = select_devices(devices, chains, "chains")
    total = warmup + draws
    chunk = _chunk(chunk_size, total, progress_bar)
    program = _program(model, args, model_kwargs, kernel_obj, chains, warmup, total, chunk)
    compiled = program.compiled
    if init is not None:
        init = _check_init(compiled, chains, init)
    key_init, key = jax.random.split(key)
    if init is None:  # the search for finite starts runs inside init_state's program
        candidates = compiled.initial_candidates(key_init, chains)
    else:  # the given values, with random values of the other sites
        candidates = _positions_from_init(compiled, key_init, chains, init)
    candidates = shard_leading(candidates, chain_devices)
    warm_state, found = program.init_state(candidates, jax.random.split(key_init, chains))
    if init is None:
        compiled.check_initial_points(candidates, found)
    elif not np.all(np.asarray(found)):
        bad = [int(c) for c in np.flatnonzero(~np.asarray(found))]
        others = "" if set(init) == set(compiled.latents) else " and random values of the others"
        raise ValueError(
            f"the log density or its gradient is not finite at the values given in init for "
            f"{sorted(init)}{others} (chain(s) {bad})"
        )

    bar = tqdm(
        total=total,
        desc="warmup" if warmup else "sampling",
        disable=not progress_bar,
        unit="it",
        dynamic_ncols=True,
    )
    divergences = 0
    interrupted = False
    collected = []
    first = 0
    settings = {
        "model": getattr(model, "__qualname__", repr(model)),
        "kernel": repr(kernel_obj),
        "chains": chains,
        "warmup": warmup,
        "draws": draws,
        "seed": seed_setting(seed),
        "dim": compiled.dim,
        "init": ppl_checkpoint.values_digest(init),
    }
    if checkpoint is not None:
        settings["inputs"] = ppl_checkpoint.inputs_digest(model, args, model_kwargs)
    if checkpoint is not None and os.path.exists(checkpoint):
        out_shape = jax.eval_shape(program.run_chunk, warm_state, 0, key)[1]
        no_draws = jax.tree.map(lambda s: np.zeros((chains, 0, *s.shape[2:]), s.dtype), out_shape)
        (warm_state, saved), meta = ppl_checkpoint.load(checkpoint, (warm_state, no_draws))
        ppl_checkpoint.check_meta(checkpoint, meta, settings)
        first = int(meta["completed"])
        collected = [saved]
        bar.update(first)
    try:
        for start, n, out in _chunked_scan(
            program.run_chunk, warm_state, key, total, chunk, first=first
        ):
            warm_state, out = out
            out = jax.tree.map(lambda a, n=n: np.asarray(a)[:, :n], out)
            first_draw = min(max(0, warmup - start), n)  # offset of the first kept draw
            if first_draw < n and not sum(c[1].shape[1] for c in collected):
                bar.set_description("sampling", refresh=False)  # shown with its own count
                divergences = 0
            # A warm-up chunk adds zero draws: the structure is kept for checkpoints.
            collected.append(jax.tree.map(lambda a, f=first_draw: a[:, f:], out))
            diverging = out[2].diverging
            divergences += int(np.sum(diverging[:, first_draw:] if first_draw < n else diverging))
            if checkpoint is not None:
                collected = [jax.tree.map(lambda *a: np.concatenate(a, axis=1), *collected)]
                ppl_checkpoint.save(
                    checkpoint, (warm_state, collected[0]), {**settings, "completed": start + n}
                )
            bar.update(n)
            bar.set_postfix(divergences=divergences, refresh=False)
    except KeyboardInterrupt:
        if sum(c[1].shape[1] for c in collected) == 0:
            raise
        interrupted = True
    finally:
        bar.close()

    positions, lp, info, step_size = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *collected)
    stats = {
        "lp": lp,
        "step_size": step_size,
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.diverging.astype(bool),
        "energy": info.energy,
        "n_steps": info.n_steps,
        "tree_depth": info.tree_depth,
    }
    if kernel_obj.name == "nuts":
        stats["reached_max_treedepth"] = info.tree_depth >= kernel_obj.max_tree_depth
    if kernel_obj.name in ("rwmh", "mala"):
        for name in ("energy", "n_steps", "tree_depth"):
            stats.pop(name)
    samples, pointwise = compiled.draws_from(
        positions, log_likelihood, key=jax.random.fold_in(key_init, 1)
    )
    post = Posterior(
        samples=samples,
        stats=stats,
        log_likelihood=pointwise,
        observed_data=compiled.observed_data,
        site_dims=compiled.site_dims,
        compiled=compiled,
        attrs={
            "method": f"mcmc/{kernel_obj.name}",
            "num_warmup": warmup,
            "partial": interrupted,
            "seed": seed_int(seed),
        },
    )
    warn_if_nonfinite(post.samples, "ppl.mcmc", stacklevel=2)
    warn_if_problems(post)
    return post


def _heuristic_step_size(logdensity_fn, kernel, key, wstate):
    step_size = adaptation.restart_step_size(
        key,
        wstate.state,
        logdensity_fn,
        kernel,
        wstate.step_size,
        wstate.inverse_mass_matrix,
    )
    return wstate._replace(step_size=step_size, reinit_step_size=jnp.zeros((), bool))


def _chunk(chunk_size, total, progress_bar) -> int:
    if total == 0:
        return 1
    if chunk_size is not None:
        return min(chunk_size, total)
    if not progress_bar:
        return total
    return max(1, math.ceil(total / PROGRESS_UPDATES))


def _chunked_scan(run_chunk, carry, key, total, chunk, first=0):
    """Yield ``(start, n_valid, (carry, outputs))`` per chunk of steps ``first .. total - 1``."""
    for start in range(first, total, chunk):
        carry, out = run_chunk(carry, start, key)
        yield start, min(chunk, total - start), (carry, out)


@dataclass(frozen=True)
class _Program:
    """A model's compiled MCMC program: reused by every call with the same model, data,
    kernel and sizes (so a second run, e.g. with another seed, compiles nothing)."""

    compiled: CompiledModel
    # (candidate starts (C, attempts, d), keys (C,)) -> (WarmupState over chains, found (C,))
    init_state: Callable
    run_chunk: Callable  # (carry, start, key) -> (carry, outputs (C, chunk, ...))


_PROGRAMS: OrderedDict = OrderedDict()
MAX_CACHED_PROGRAMS = 8


def _program(model, args, kwargs, kernel_obj, chains, warmup, total, chunk) -> _Program:
    fingerprint = program_fingerprint(model, args, kwargs)
    cache_key = (fingerprint, kernel_obj, chains, warmup, total, chunk)
    if cache_key in _PROGRAMS:
        _PROGRAMS.move_to_end(cache_key)
        return _PROGRAMS[cache_key]
    compiled = compile_model(model, args, kwargs)
    if any(s.is_diffusion_prior for s in compiled.latents.values()):
        raise ValueError(
            "the model has a DiffusionPrior site; sample its posterior with ppl.smc(model, ...)"
        )
    program = _build_program(compiled, kernel_obj, chains, warmup, chunk)
    _PROGRAMS[cache_key] = program
    while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


def _build_program(compiled, kernel_obj, chains, warmup, chunk) -> _Program:
    logdensity_fn = compiled.logdensity

    @jax.jit
    def init_state(candidates, keys):
        """Each chain's first finite candidate start and its warm-up state: one program, so
        the model's gradient is compiled once for both."""
        positions, found = jax.vmap(compiled.first_finite)(candidates)
        state = jax.vmap(lambda x: adaptation.warmup_init(x, logdensity_fn, kernel_obj, warmup))(
            positions
        )
        if warmup == 0:  # no adaptation: Hoffman & Gelman's (2014, alg. 4) step size (RWMH:
            # 2.38 / sqrt(d)), fixed
            state = jax.vmap(partial(_heuristic_step_size, logdensity_fn, kernel_obj))(keys, state)
        return state, found

    def warmup_then_sample(key, wstate):
        """One iteration: an adaptation step while ``step < warmup``, then plain kernel steps
        with the adapted (averaged) step size and mass matrix. One compiled kernel serves both
        phases, so NUTS is compiled once."""
        sampling = wstate.step >= warmup
        step_size = jnp.where(sampling, adaptation.warmup_final(wstate)[1], wstate.step_size)
        frozen = wstate._replace(step_size=step_size)
        new, info = adaptation.warmup_step(key, frozen, logdensity_fn, kernel_obj, warmup)
        kept = frozen._replace(state=new.state, step=new.step, reinit_step_size=False)
        new = jax.tree.map(lambda a, b: jnp.where(sampling, a, b), kept, new)
        return new, (new.state.position, new.state.logdensity, info, step_size)

    vstep = jax.vmap(warmup_then_sample)

    @jax.jit
    def run_chunk(carry, start, key):
        """``chunk`` iterations from ``start``; iteration ``i`` uses
        ``split(fold_in(key, i), chains)``. The last chunk may run past ``total``: the caller
        drops those draws, and no earlier draw depends on them."""

        def body(carry, i):
            keys = jax.random.split(jax.random.fold_in(key, start + i), chains)
            return vstep(keys, carry)

        carry, out = jax.lax.scan(body, carry, jnp.arange(chunk))
        # (chunk, chains, ...) -> (chains, chunk, ...)
        return carry, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out)

    return _Program(compiled, init_state, run_chunk)


def _check_init(compiled: CompiledModel, chains: int, init: dict) -> dict:
    """``init`` checked site by site before anything is compiled, each value broadcast to
    ``(chains, *shape)``: a known latent site, numbers of the site's shape (one start shared by
    the chains) or ``(chains, *shape)`` (one per chain, as numpyro's ``init_params``), finite,
    and inside the site's support where that does not depend on other sites."""
    if not isinstance(init, dict):
        raise TypeError(f"init must be a dict of site name -> value, got {type(init).__name__}")
    unknown = set(init) - set(compiled.latents)
    if unknown:
        raise ValueError(
            f"init names unknown latent site(s) {sorted(unknown)}; latent sites are "
            f"{sorted(compiled.latents)}"
        )
    checked = {}
    for name, value in init.items():
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(f"init['{name}'] must be numbers, got dtype {array.dtype}")
        shape = compiled.latents[name].shape
        if array.shape not in (shape, (chains, *shape)):
            raise ValueError(
                f"init['{name}'] has shape {array.shape}, expected {shape} (shared by the "
                f"chains) or {(chains, *shape)} (one per chain)"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"init['{name}'] is not finite: {array}")
        transform = compiled.latents[name].transform
        outside = values_outside(transform.codomain, array)
        if outside:
            raise ValueError(
                f"init['{name}'] = {array} lies outside the support of site '{name}' "
                f"({transform.codomain})"
            )
        checked[name] = np.broadcast_to(array, (chains, *shape))
    return checked


def _positions_from_init(compiled: CompiledModel, key, chains: int, init: dict):
    """``(chains, attempts, dim)`` candidate starts with the sites given in ``init`` (checked
    by :func:`_check_init`) at their values and the others Stan-style random
    (:meth:`~ppl.model.CompiledModel.start_with`); the chain starts at its first candidate
    where the density and gradient are finite, so random values of the others that make the
    density infinite are drawn again, as numpyro's ``init_to_value`` does."""
    given = {name: jnp.asarray(value, dtype=jnp.result_type(float)) for name, value in init.items()}
    candidates = compiled.initial_candidates(key, chains)

    def one_chain(rows, values):
        return jax.vmap(lambda row: compiled.start_with(row, values))(rows)

    return jax.vmap(one_chain)(candidates, given)
