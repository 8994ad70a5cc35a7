"""The one Sequential Monte Carlo engine.

A Feynman-Kac model (Chopin & Papaspiliopoulos 2020, *An Introduction to Sequential Monte
Carlo*, ch. 5, Def. 5.1) is an initial distribution ``M_0``, Markov kernels ``M_t`` and
potentials ``G_t``. It defines the unnormalised measures

    gamma_t(dx_{0:t}) = M_0(dx_0) G_0(x_0) prod_{s=1}^t M_s(x_{s-1}, dx_s) G_s(x_{s-1}, x_s)

with normalising constants ``Z_t``. Here a method supplies the model as two functions:

* ``init(key, n) -> (particles, log_w0)``: ``n`` draws of ``X_0`` (any pytree with leading
  axis ``n``) with initial log-weights (zeros when ``X_0 ~ M_0`` exactly; an importance
  weight ``log dM_0/dQ_0`` when drawn from another ``Q_0``);
* ``step(key, particles, t) -> (particles, log_w_increment, aux)``: for ``t = 0, ..., T-1``,
  move every particle with ``M_t`` and return ``log G_t`` of the new particle (fused, so the
  move and the weight share evaluations), plus any per-step diagnostics ``aux`` (a pytree,
  stacked over steps in the result).

The engine implements the generic SMC algorithm (Chopin & Papaspiliopoulos 2020,
Algorithm 10.1 with the adaptive resampling of Sec. 10.2): at step ``t``, if
``ESS(W_{t-1}) < ess_threshold * N`` the particles are resampled (ancestors
``A_t ~ r(W_{t-1})``) and the weights reset to ``1/N``, otherwise ``A_t^n = n``;
optionally an MCMC kernel rejuvenates the resampled particles; then particles move and are
reweighted, ``log w_t^n = log W_{t-1}^{A_t^n} + log G_t(X_t^n)`` (with ``W`` reset to uniform
after resampling). The normalising constant is estimated by

    log Z_T^N = log( (1/N) sum_n w_0^n ) + sum_{t=0}^{T-1} log( sum_n W_{t-1}^{A_t^n} G_t^n )

(Chopin & Papaspiliopoulos 2020, eq. (10.4) and Sec. 10.2, Prop. 16.3), with ``W_{-1}`` the
normalised initial weights. It is unbiased for ``Z_T`` whatever the resampling decisions
(Del Moral 2004, Thm. 7.4.2); so is the option of deciding only every ``k`` steps
(``resample_every``). Every sum is a log-sum-exp, so the estimate stays finite when
all but one weight underflow.

Numerical failure: a ``NaN`` log-weight counts as weight zero (``-inf``). If at some step
*every* weight is zero (or their sum is not finite) the run cannot continue meaningfully; the
result records ``failed=True`` and the first such step in ``failed_step``, the log-evidence is
``-inf`` from that step on, and the weights are reset to uniform so that no ``NaN`` spreads.
The host-side :func:`check` turns that flag into a ``FloatingPointError``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .resampling import Resampler, get_resampler

__all__ = [
    "FeynmanKac",
    "SMCResult",
    "SMCState",
    "StepRecord",
    "run",
    "Program",
    "run_program",
    "start",
    "advance",
    "finish",
    "check",
    "log_ess",
    "ess",
    "normalize_log_weights",
    "normalize_with_ess",
    "resample_particles",
]

PyTree = Any


class FeynmanKac(NamedTuple):
    """A Feynman-Kac model as the engine consumes it.

    Attributes:
        init: ``init(key, n) -> (particles, log_w0)``; ``particles`` is a pytree whose leaves
            have leading axis ``n`` and ``log_w0`` has shape ``(n,)``.
        step: ``step(key, particles, t) -> (particles, log_w_increment, aux)`` moves the
            particles with ``M_t`` and returns ``log G_t`` of shape ``(n,)`` and a pytree
            ``aux`` of diagnostics (use ``()`` for none). ``t`` is a traced int32 scalar.
    """

    init: Callable[[Array, int], tuple[PyTree, Array]]
    step: Callable[[Array, PyTree, Array], tuple[PyTree, Array, PyTree]]


class SMCResult(NamedTuple):
    """Output of :func:`run` (``T = num_steps``, ``N = num_particles``).

    Attributes:
        particles: final particles (pytree, leading axis ``N``).
        log_weights: final normalised log-weights ``log W_T``, shape ``(N,)``
            (uniform if ``resample_at_end``).
        ancestors: ``(T, N)`` int32; ``ancestors[t, n]`` is the index (among the particles
            after step ``t - 1``) of the parent of particle ``n`` at step ``t``; the identity
            where no resampling took place. ``None`` when run with ``record_ancestors=False``.
        ess: ``(T,)`` effective sample size of the weights after reweighting at step ``t``.
        resampled: ``(T,)`` bool, whether resampling happened at the start of step ``t``.
        log_evidence_increments: ``(T,)`` ``log sum_n W_{t-1}^{A_t^n} G_t^n``.
        log_evidence_running: ``(T,)`` ``log Z_t^N`` (includes the initial-weight term).
        log_evidence: scalar ``log Z_T^N``.
        aux: the stacked per-step ``aux`` of the model (leading axis ``T``).
        summaries: stacked output of ``summary_fn`` (``None`` if not requested).
        failed: scalar bool, all weights were zero at some step.
        failed_step: scalar int32, the first such step (``-1`` for the initial weights,
            ``T`` if none; use :func:`check`).
        nan_potentials: ``(T,)`` int32, how many particles' log-potential ``log G_t`` was NaN
            at step ``t`` (each given weight zero: a score or density undefined there, which
            cuts that region out of the target; callers should say so).
    """

    particles: PyTree
    log_weights: Array
    ancestors: Array
    ess: Array
    resampled: Array
    log_evidence_increments: Array
    log_evidence_running: Array
    log_evidence: Array
    aux: PyTree
    summaries: PyTree
    failed: Array
    failed_step: Array
    nan_potentials: Array


def _clean(log_w: Array) -> Array:
    """Map ``NaN`` log-weights to ``-inf`` (weight zero)."""
    return jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)


def normalize_log_weights(log_w: Array) -> tuple[Array, Array, Array]:
    """Return ``(log W, log sum_n exp(log_w_n), ok)`` computed by log-sum-exp.

    ``ok`` is False when every weight is zero or the sum is not finite; then ``log W`` is
    uniform (``-log N``) rather than ``NaN``.
    """
    log_W, lse, ok, _ = normalize_with_ess(log_w)
    return log_W, lse, ok


def normalize_with_ess(log_w: Array) -> tuple[Array, Array, Array, Array]:
    """:func:`normalize_log_weights` plus the ESS of the result, from one pass of ``exp``.

    With ``m = max_n log w_n``, ``e_n = exp(log w_n - m)`` and ``S = sum_n e_n``:
    ``lse = m + log S``, ``log W_n = log w_n - lse`` and ``ESS = S^2 / sum_n e_n^2`` (Kong 1992;
    ``e_n <= 1`` and ``sum_n e_n^2 >= 1``, so nothing overflows). ``NaN`` counts as weight
    zero. Returns ``(log W, lse, ok, ess)``; when not ``ok`` (every weight zero, or the sum not
    finite) ``log W`` is uniform and ``ess`` is ``N``, that of the uniform weights.
    """
    log_w = _clean(log_w)
    n = log_w.shape[0]
    m = jnp.max(log_w)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    e = jnp.exp(log_w - m)
    total = jnp.sum(e)
    lse = m + jnp.log(total)
    ok = jnp.isfinite(lse)
    log_W = jnp.where(ok, log_w - jnp.where(ok, lse, 0.0), -jnp.log(n).astype(log_w.dtype))
    ess_value = jnp.where(ok, total**2 / jnp.sum(e**2), jnp.asarray(n, log_w.dtype))
    return log_W, lse, ok, ess_value


def log_ess(log_w: Array) -> Array:
    """Log effective sample size ``log ESS = 2 lse(log w) - lse(2 log w)``.

    ``ESS = (sum_n w_n)^2 / sum_n w_n^2`` (Kong 1992; Chopin & Papaspiliopoulos 2020,
    eq. (8.7)); the log-weights need not be normalised. ``NaN`` counts as weight zero.
    """
    log_w = _clean(log_w)
    return 2.0 * jax.nn.logsumexp(log_w) - jax.nn.logsumexp(2.0 * log_w)


def ess(log_w: Array) -> Array:
    """Effective sample size ``exp(log_ess(log_w))`` in ``[1, N]``."""
    return jnp.exp(log_ess(log_w))


def resample_particles(
    key: Array, particles: PyTree, log_W: Array, resampler: Resampler
) -> tuple[PyTree, Array]:
    """Draw ancestors from the normalised log-weights and gather every leaf along axis 0."""
    n = log_W.shape[0]
    ancestors = resampler(key, jnp.exp(log_W), n)
    return jax.tree.map(lambda leaf: jnp.take(leaf, ancestors, axis=0), particles), ancestors


class SMCState(NamedTuple):
    """The carry of the engine between steps: what a chunked run or a checkpoint keeps.

    Attributes:
        particles: current particles (pytree, leading axis ``N``).
        log_W: current normalised log-weights ``log W_t``, shape ``(N,)``.
        log_z: running ``log Z_t^N``.
        failed: whether all weights vanished at some step so far.
        failed_step: the first such step (``-1`` initial weights, ``T`` if none).
        ess: the effective sample size of ``log_W`` (kept so that the resampling decision
            of the next step needs no second pass over the weights).
    """

    particles: PyTree
    log_W: Array
    log_z: Array
    failed: Array
    failed_step: Array
    ess: Array


class StepRecord(NamedTuple):
    """Per-step outputs of :func:`advance`, stacked along a leading step axis (see
    :class:`SMCResult` for each field)."""

    ancestors: Array
    ess: Array
    resampled: Array
    log_evidence_increments: Array
    log_evidence_running: Array
    aux: PyTree
    summaries: PyTree
    nan_potentials: Array


def check_unroll(unroll) -> int | bool:
    """``unroll`` as ``lax.scan`` takes it: ``True`` (the whole loop), ``False`` (same as 1) or
    a positive integer (steps per loop iteration)."""
    if isinstance(unroll, bool | np.bool_):
        return True if unroll else 1
    if isinstance(unroll, int | np.integer) and unroll >= 1:
        return int(unroll)
    raise ValueError(f"unroll must be True, False or a positive integer; got {unroll!r}")


def _keys(key: Array) -> tuple[Array, Array, Array]:
    """``(init, steps, end)`` keys of a run; step ``t`` uses ``fold_in(steps, t)``, so the
    numbers do not depend on how the steps are split into chunks."""
    key_init, key_steps, key_end = jax.random.split(key, 3)
    return key_init, key_steps, key_end


def start(key: Array, fk: FeynmanKac, num_particles: int, num_steps: int) -> SMCState:
    """Draw ``X_0`` and normalise the initial weights: the state before step ``t = 0``.

    ``log Z_0^N = log((1/N) sum_n w_0^n)``. ``num_steps`` (static) is the ``failed_step``
    value meaning "never failed".
    """
    particles, log_w0 = fk.init(_keys(key)[0], num_particles)
    log_w0 = jnp.asarray(log_w0)
    dtype = log_w0.dtype if jnp.issubdtype(log_w0.dtype, jnp.floating) else jnp.float32
    log_w0 = jnp.broadcast_to(log_w0.astype(dtype), (num_particles,))
    log_W0, lse0, ok0, ess0 = normalize_with_ess(log_w0)
    log_z0 = jnp.where(ok0, lse0 - jnp.log(num_particles).astype(dtype), -jnp.inf)
    return SMCState(
        particles,
        log_W0,
        log_z0,
        jnp.logical_not(ok0),
        jnp.where(ok0, jnp.int32(num_steps), jnp.int32(-1)),
        ess0,
    )


def advance(
    key: Array,
    fk: FeynmanKac,
    state: SMCState,
    first_step: Array | int,
    length: int,
    num_steps: int | None = None,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    rejuvenate: Callable[[Array, PyTree, Array], PyTree] | None = None,
    summary_fn: Callable[[PyTree, Array, PyTree], PyTree] | None = None,
    resample_every: int = 1,
    unroll: int | bool = 1,
    record_ancestors: bool = True,
) -> tuple[SMCState, StepRecord]:
    """Steps ``first_step, ..., first_step + length - 1`` of :func:`run` (one ``lax.scan`` over
    blocks of steps).

    ``key`` is the run's key (the same for every chunk); ``first_step`` may be traced,
    ``length`` is static and a multiple of ``resample_every`` (so chunks starting at multiples
    of the chunk length keep the decisions at ``t = 0, k, 2k, ...``). If ``num_steps`` is
    given, steps ``t >= num_steps`` leave the state unchanged (so one compiled chunk length
    serves a run whose length it does not divide); their records are padding for the caller to
    drop. Other arguments as in :func:`run`.

    The loop runs over blocks of ``k = resample_every`` steps. A block starts with the
    resampling decision (and rejuvenation), then moves the particles ``k`` times while adding
    up the log-potentials, ``log w_{t+j} = log W_{t-1} + sum_{i<=j} log G_{t+i}``, and
    normalises all ``k`` rows at once after the block (one batched pass): the weights, ESS
    and evidence of every step are those of :func:`run` with ``resample_every=1`` and the
    same resampling decisions, but the decision (a ``lax.cond``, on a GPU a device-to-host
    synchronisation) and the normalisation kernels occur once per block. If every weight
    vanishes inside a block, the remaining steps of the block record ``-inf`` increments and
    zero ESS, and the weights are reset to uniform at the end of the block. ``unroll`` is
    ``lax.scan``'s, for the ``k`` moves inside a block (``True``: the whole block as straight-line
    code, which lets XLA fuse across steps at the price of ``k`` copies of the step to compile).
    ``record_ancestors=False`` leaves the ``(length, N)`` ancestor record out (``None``).
    """
    k = int(resample_every)
    if k < 1 or length % k:
        raise ValueError(
            f"resample_every must be a positive divisor of the chunk length {length}; got "
            f"{resample_every}"
        )
    unroll = check_unroll(unroll)
    resampler = get_resampler(resampling)
    key_steps = _keys(key)[1]
    n = state.log_W.shape[0]
    dtype = state.log_W.dtype
    threshold = jnp.asarray(ess_threshold, dtype) * n
    # ESS <= N always, so 1.0 means "every step" (also when the weights are exactly uniform).
    always = jnp.asarray(ess_threshold) >= 1.0
    identity = jnp.arange(n, dtype=jnp.int32)
    uniform = -jnp.log(n).astype(dtype)

    def move(particles, step):
        t, k_step = step
        t_model = t if num_steps is None else jnp.minimum(t, num_steps - 1)
        new, log_g, aux = fk.step(k_step, particles, t_model)
        log_g = jnp.broadcast_to(jnp.asarray(log_g, dtype), (n,))
        if num_steps is not None:
            # Past the end: keep the particles, no weight (the record is padding). A select,
            # not a cond: no branch decision per step.
            valid = t < num_steps
            new = jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, particles)
            log_g = jnp.where(valid, log_g, 0.0)
        # NaNs are counted and cleaned after the block, in one pass over its k rows.
        return new, (log_g, aux, new if summary_fn is not None else None)

    def block(state, steps):
        ts, (k_res, k_rej, k_step) = steps
        particles, log_W, log_z, failed, failed_step, ess_W = state

        do_resample = jnp.logical_or(ess_W < threshold, always)
        if num_steps is not None:
            do_resample = jnp.logical_and(do_resample, ts[0] < num_steps)

        def _resample(args):
            parts, lw = args
            new, anc = resample_particles(k_res[0], parts, lw, resampler)
            if rejuvenate is not None:
                new = rejuvenate(k_rej[0], new, ts[0])
            return new, jnp.full_like(lw, uniform), anc

        def _keep(args):
            parts, lw = args
            return parts, lw, identity

        particles, log_W, ancestors = jax.lax.cond(
            do_resample, _resample, _keep, (particles, log_W)
        )
        particles, (log_g, aux, history) = jax.lax.scan(
            move, particles, (ts, k_step), unroll=unroll
        )
        nan_counts = jnp.sum(jnp.isnan(log_g), axis=1).astype(jnp.int32)
        log_g = _clean(log_g)
        # (k, N) unnormalised log-weights after each step of the block, normalised row-wise.
        log_w = _clean(log_W + jnp.cumsum(log_g, axis=0))
        rows_log_W, rows_lse, rows_ok, rows_ess = jax.vmap(normalize_with_ess)(log_w)
        # A failed row stays failed for the rest of the block (its weights are not reset).
        ok = jnp.cumsum(jnp.logical_not(rows_ok)) == 0
        lse_before = jnp.concatenate([jnp.zeros((1,), dtype), rows_lse[:-1]])
        increments = jnp.where(ok, rows_lse - jnp.where(ok, lse_before, 0.0), -jnp.inf)
        running = log_z + jnp.where(ok, rows_lse, -jnp.inf)
        step_ess = jnp.where(ok, rows_ess, 0.0)
        # The state after the block is that of its last step before num_steps (padding steps
        # leave it exactly unchanged, so chunking does not change a single bit).
        if num_steps is None:
            last, in_run = k - 1, True
        else:
            valid_steps = jnp.clip(num_steps - ts[0], 0, k)
            last, in_run = jnp.maximum(valid_steps - 1, 0), valid_steps > 0
        newly_failed = jnp.logical_not(ok[last]) & jnp.logical_not(failed) & in_run
        failed_step = jnp.where(newly_failed, ts[jnp.argmin(ok)], failed_step)
        failed = failed | newly_failed
        summaries = None if summary_fn is None else jax.vmap(summary_fn)(history, rows_log_W, aux)
        record = StepRecord(
            ancestors=(
                jnp.broadcast_to(identity, (k, n)).at[0].set(ancestors)
                if record_ancestors
                else None
            ),
            ess=step_ess,
            resampled=jnp.zeros((k,), bool).at[0].set(do_resample),
            log_evidence_increments=increments,
            log_evidence_running=running,
            aux=aux,
            summaries=summaries,
            nan_potentials=nan_counts,
        )
        new_state = SMCState(
            particles,
            jnp.where(in_run, rows_log_W[last], log_W),
            jnp.where(in_run, running[last], log_z),
            failed,
            failed_step,
            jnp.where(in_run, rows_ess[last], ess_W),
        )
        return new_state, record

    steps = jnp.asarray(first_step, jnp.int32) + jnp.arange(length, dtype=jnp.int32)
    # The (resample, rejuvenate, move) keys of step t are split from fold_in(key_steps, t);
    # drawn for the whole chunk at once, outside the loop.
    step_keys = jax.vmap(lambda t: jax.random.split(jax.random.fold_in(key_steps, t), 3))(steps)
    xs = (steps, (step_keys[:, 0], step_keys[:, 1], step_keys[:, 2]))
    blocks = jax.tree.map(lambda a: a.reshape(length // k, k, *a.shape[1:]), xs)
    state, records = jax.lax.scan(block, state, blocks)
    return state, jax.tree.map(lambda a: a.reshape(length, *a.shape[2:]), records)


def finish(
    key: Array,
    state: SMCState,
    records: StepRecord,
    resampling: str | Resampler = "systematic",
    resample_at_end: bool = False,
) -> SMCResult:
    """Assemble the :class:`SMCResult` from the final state and the stacked step records."""
    particles, log_W = state.particles, state.log_W
    if resample_at_end:
        resampler = get_resampler(resampling)
        particles, _ = resample_particles(_keys(key)[2], particles, log_W, resampler)
        log_W = jnp.full_like(log_W, -jnp.log(log_W.shape[0]).astype(log_W.dtype))
    return SMCResult(
        particles=particles,
        log_weights=log_W,
        log_evidence=state.log_z,
        failed=state.failed,
        failed_step=state.failed_step,
        **records._asdict(),  # the per-step fields share SMCResult's names
    )


def run(
    key: Array,
    fk: FeynmanKac,
    num_particles: int,
    num_steps: int,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    rejuvenate: Callable[[Array, PyTree, Array], PyTree] | None = None,
    resample_at_end: bool = False,
    summary_fn: Callable[[PyTree, Array, PyTree], PyTree] | None = None,
    resample_every: int = 1,
    unroll: int | bool = 1,
    record_ancestors: bool = True,
) -> SMCResult:
    """Run adaptive-resampling SMC on a Feynman-Kac model for ``num_steps`` steps.

    Step ``t`` (``t = 0, ..., num_steps - 1``), as in Chopin & Papaspiliopoulos (2020),
    Algorithm 10.1 / Sec. 10.2:

    1. if ``ESS(W_{t-1}) < ess_threshold * N``: ``A_t ~ resampling(W_{t-1})``, particles
       gathered, ``log W_{t-1} <- -log N``, and, if given, ``rejuvenate(key, particles, t)``
       (an MCMC kernel that must leave the law targeted by the resampled particles, i.e. the
       normalised ``gamma_{t-1}``, invariant); ``ess_threshold >= 1.0`` resamples at every
       step (even when the weights are uniform), ``0.0`` never;
    2. ``particles, log G_t, aux = step(key, particles, t)``;
    3. ``log w_t = log W_{t-1} + log G_t``; increment ``log sum_n exp(log w_t^n)``;
       ``log W_t = log w_t - increment``.

    The run is :func:`start`, :func:`advance` over all steps and :func:`finish`; a host
    driver can call :func:`advance` in chunks instead (progress bars, checkpoints, interrupts)
    and gets the same numbers, since step ``t`` draws its randomness from ``fold_in(key, t)``.

    Args:
        key: PRNG key.
        fk: the model, see :class:`FeynmanKac`.
        num_particles: ``N`` (static).
        num_steps: ``T`` (static).
        resampling: a name in :data:`inference.smc.resampling.RESAMPLERS` or a resampler.
        ess_threshold: resample when ``ESS < ess_threshold * N``.
        rejuvenate: optional ``rejuvenate(key, particles, t) -> particles``.
        resample_at_end: resample once more after the last step (final weights uniform).
        summary_fn: optional ``summary_fn(particles, log_W_t, aux) -> pytree`` evaluated after
            each step's reweighting (e.g. weighted means, or the particles themselves to keep
            the history); stacked into ``SMCResult.summaries``.
        resample_every: ``k``; step 1 (the resampling decision and rejuvenation) happens only
            at steps ``t = 0, k, 2k, ...``; every step's weights, ESS and evidence are still
            recorded. Deciding only at fixed times keeps the estimate unbiased (Del Moral
            2004, Thm. 7.4.2). A larger ``k`` saves the per-step decision and normalisation
            (see :func:`advance`) at the price of more weight degeneracy between decisions.
        unroll: ``lax.scan``'s ``unroll`` for the ``k`` moves of a block; ``True`` compiles
            each block as straight-line code (no inner loop, so no per-step loop overhead on a
            GPU; ``k`` copies of the step to compile). The numbers agree to rounding.
        record_ancestors: keep the ``(T, N)`` ancestor indices of every step (the genealogy);
            ``False`` gives ``ancestors=None`` and saves ``4 T N`` bytes (200 MB for 10^5
            particles over 500 steps) and their transfer to the host.

    Returns:
        An :class:`SMCResult`; the whole run is a single ``lax.scan`` and is jit/vmap-able.
    """
    if int(resample_every) != resample_every or resample_every < 1:
        raise ValueError(f"resample_every must be a positive integer; got {resample_every!r}")
    state = start(key, fk, num_particles, num_steps)
    # A length that resample_every does not divide runs padded with no-op steps.
    length = -(-num_steps // resample_every) * resample_every
    state, records = advance(
        key,
        fk,
        state,
        0,
        length,
        None if length == num_steps else num_steps,
        resampling,
        ess_threshold,
        rejuvenate,
        summary_fn,
        resample_every,
        unroll,
        record_ancestors,
    )
    records = jax.tree.map(lambda a: a[:num_steps], records)
    return finish(key, state, records, resampling, resample_at_end)


class Program(NamedTuple):
    """A Feynman-Kac model together with the engine settings that run it.

    Samplers built on the engine return one of these (``fk`` plus the arguments of
    :func:`run` other than the key and the particle count), so that a host driver can run
    it in chunks (:func:`start` / :func:`advance` / :func:`finish`) and :func:`run_program`
    can run it in one scan; both give the same numbers.
    """

    fk: FeynmanKac
    num_steps: int
    resampling: str | Resampler = "systematic"
    ess_threshold: float = 0.5
    rejuvenate: Callable[[Array, PyTree, Array], PyTree] | None = None
    resample_at_end: bool = False
    summary_fn: Callable[[PyTree, Array, PyTree], PyTree] | None = None
    resample_every: int = 1
    unroll: int | bool = 1
    record_ancestors: bool = True


def run_program(key: Array, program: Program, num_particles: int) -> SMCResult:
    """:func:`run` with the model and settings of ``program``."""
    p = program
    return run(
        key,
        p.fk,
        num_particles,
        p.num_steps,
        p.resampling,
        p.ess_threshold,
        p.rejuvenate,
        p.resample_at_end,
        p.summary_fn,
        p.resample_every,
        p.unroll,
        p.record_ancestors,
    )


def nan_potentials_report(result: SMCResult) -> str | None:
    """Host side: a sentence saying how many log-potentials were NaN and at how many steps
    (those particles got weight zero), or ``None`` when there were none."""
    counts = np.asarray(result.nan_potentials)
    total = int(counts.sum())
    if not total:
        return None
    per_step = counts.reshape(-1, counts.shape[-1]).sum(axis=0)
    steps = np.flatnonzero(per_step)
    return (
        f"{total} particle log-weight(s) were NaN, at {steps.size} of {per_step.size} steps "
        f"(first step {int(steps[0])}); those particles got weight zero, which cuts the region "
        "where the score or density is undefined out of the target"
    )


def check(result: SMCResult) -> SMCResult:
    """Host-side check of a (non-batched) result; raise if the weights ever all vanished.

    Raises:
        FloatingPointError: ``"all particle weights are zero at step t=..."`` (``t=-1`` means
            the initial weights), naming the first failing step.
    """
    failed = np.asarray(result.failed)
    if failed.ndim == 0:
        if bool(failed):
            t = int(np.asarray(result.failed_step))
            raise FloatingPointError(
                f"all particle weights are zero at step t={t} (every log-weight was -inf or "
                "NaN); the model's potentials or proposal are degenerate at that step"
            )
        return result
    bad = np.flatnonzero(failed.reshape(-1))
    if bad.size:
        t = int(np.asarray(result.failed_step).reshape(-1)[bad[0]])
        raise FloatingPointError(
            f"all particle weights are zero at step t={t} in run {int(bad[0])} of a batch "
            f"of {failed.size} (every log-weight was -inf or NaN)"
        )
    return result
