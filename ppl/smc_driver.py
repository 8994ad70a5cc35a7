"""Host driver for the SMC engine: chunks, progress bar, Ctrl-C and checkpoints.

Every SMC backend (tempered SMC, Feynman-Kac correctors, diffusion posterior samplers) is an
:class:`inference.smc.engine.Program`. This module runs ``R`` independent runs of a program
(one per key; ``lax.map`` over runs, since under ``vmap`` the engine's data-dependent
resampling branch would execute both sides) in jitted chunks of steps, so that the host can

* update a tqdm bar between chunks (no callback inside the hot loop),
* stop early when the caller's ``stop_when`` says the remaining steps are no-ops,
* keep the completed steps when the user presses Ctrl-C (the result is marked interrupted),
* write the engine state at chunk boundaries (``checkpoint=``; atomic ``.npz``, no pickle)
  and resume from it.

Step ``t`` of a run draws its randomness from ``fold_in(key, t)`` (see
:func:`inference.smc.engine.advance`), so the numbers do not depend on the chunk size, nor on
whether the run was resumed from a checkpoint.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from inference.smc import engine
from ppl import checkpoint as ppl_checkpoint
from ppl.validation import check_count

PROGRESS_UPDATES = 20
MAX_COMPILED = 8
_COMPILED: OrderedDict = OrderedDict()

PyTree = Any


class Driven(NamedTuple):
    """Result of :func:`drive`.

    Attributes:
        result: an :class:`~inference.smc.engine.SMCResult` whose leaves have a leading run
            axis ``R`` (host numpy arrays); the step axis holds the completed steps only.
        steps_done: number of completed steps.
        interrupted: the user pressed Ctrl-C; ``result`` holds the state after
            ``steps_done`` steps (not the end of the run).
    """

    result: engine.SMCResult
    steps_done: int
    interrupted: bool


def default_chunk(num_steps: int, progress: bool) -> int:
    """About ``1/20`` of the run with a progress bar, the whole run without one."""
    return max(1, -(-num_steps // PROGRESS_UPDATES)) if progress else num_steps


def drive(
    make_program: Callable[[PyTree], engine.Program],
    keys: jax.Array,
    run_inputs: PyTree,
    num_particles: int,
    *,
    desc: str = "smc",
    unit: str = "step",
    progress: bool = True,
    chunk_size: int | None = None,
    checkpoint: str | None = None,
    settings: dict | None = None,
    stop_when: Callable[[engine.StepRecord], bool] | None = None,
    postfix: Callable[[engine.StepRecord], dict] | None = None,
    known_length: bool = True,
    cache_key: tuple | None = None,
) -> Driven:
    """Run ``R = len(keys)`` runs of ``make_program(run_input)`` in chunks of steps.

    Args:
        make_program: builds the program of one run from its slice of ``run_inputs``
            (called inside ``jit``; must be pure).
        keys: ``(R,)`` PRNG keys, one per run.
        run_inputs: pytree with leading axis ``R`` (or ``None``), e.g. initial particles.
        num_particles: ``N`` (static).
        desc, unit: progress-bar text.
        progress: show a tqdm bar.
        chunk_size: steps per jitted chunk (default :func:`default_chunk`), rounded up to a
            multiple of the program's ``resample_every``; the last chunk is padded with no-op
            steps, so one compiled chunk serves the whole run.
        checkpoint: a path; the state is written there after every chunk, and a run started
            with an existing file resumes from it (``settings`` must match).
        settings: JSON-able description of the run stored in (and checked against) the
            checkpoint.
        stop_when: host predicate on the records so far (leading axes ``(R, t)``); ``True``
            ends the run early (the remaining steps must leave the state unchanged).
        postfix: host function of the records so far giving the bar's postfix.
        known_length: whether ``num_steps`` is the run's length (else a cap, as the maximum
            number of tempering stages: the bar then counts without a total).
        cache_key: hashable identity of ``make_program`` (model, data, settings); calls with
            an equal key reuse the compiled chunks instead of compiling again.

    Returns:
        :class:`Driven`. A Ctrl-C before the first chunk completes is re-raised.
    """
    if chunk_size is not None:
        chunk_size = check_count("chunk_size", chunk_size)
    keys = jnp.asarray(keys)
    first_input = jax.tree.map(lambda a: a[0], run_inputs)
    first_program = make_program(first_input)
    num_steps = int(first_program.num_steps)
    every = int(first_program.resample_every)
    chunk = min(chunk_size or default_chunk(num_steps, progress), num_steps)
    chunk = -(-chunk // every) * every  # whole blocks of resampling decisions
    masked = num_steps % chunk != 0

    compiled_key = None
    if cache_key is not None:
        compiled_key = (cache_key, num_particles, num_steps, chunk, masked, keys.shape[0])
    if compiled_key in _COMPILED:
        _COMPILED.move_to_end(compiled_key)
        (start_all, chunk_all, finish_all), empty = _COMPILED[compiled_key]
        states = start_all(keys, run_inputs)
    else:
        start_all, chunk_all, finish_all = _compile(
            make_program, num_particles, num_steps, chunk, masked
        )
        states = start_all(keys, run_inputs)
        shape = jax.eval_shape(chunk_all, keys, run_inputs, states, 0)[1]
        empty = jax.tree.map(lambda s: np.zeros((s.shape[0], 0, *s.shape[2:]), s.dtype), shape)
        if compiled_key is not None:
            _COMPILED[compiled_key] = ((start_all, chunk_all, finish_all), empty)
            while len(_COMPILED) > MAX_COMPILED:
                _COMPILED.popitem(last=False)
    records = empty
    done = 0
    meta = {**(settings or {}), "num_steps": num_steps, "particles": num_particles}
    meta["runs"] = int(keys.shape[0])
    if checkpoint is not None and os.path.exists(checkpoint):
        (states, records), stored = ppl_checkpoint.load(checkpoint, (states, empty))
        ppl_checkpoint.check_meta(checkpoint, stored, meta)
        done = int(stored["completed"])
        states = jax.tree.map(jnp.asarray, states)

    total = num_steps if known_length else None
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    bar.update(done)
    interrupted = False
    # The chunks' records, joined along the step axis only when something reads them: joining
    # after every chunk would copy the records so far each time (quadratic in the chunks).
    pieces = [records]

    def records_so_far():
        if len(pieces) > 1:
            pieces[:] = [jax.tree.map(_join_steps, *pieces)]
        return pieces[0]

    try:
        while done < num_steps and not (
            done and stop_when is not None and stop_when(records_so_far())
        ):
            new_states, chunk_records = chunk_all(keys, run_inputs, states, done)
            valid = min(chunk, num_steps - done)
            # One transfer of all the leaves (device_get starts every copy before waiting).
            host = jax.device_get(chunk_records)
            chunk_records = jax.tree.map(lambda a, v=valid: a[:, :v], host)
            states = new_states
            pieces.append(chunk_records)
            done += valid
            if checkpoint is not None:
                saved = (states, records_so_far())
                ppl_checkpoint.save(checkpoint, saved, {**meta, "completed": done})
            bar.update(valid)
            if postfix is not None:
                bar.set_postfix(postfix(records_so_far()), refresh=False)
    except KeyboardInterrupt:
        if done == 0:
            raise
        interrupted = True
    finally:
        bar.close()

    result = jax.device_get(finish_all(keys, run_inputs, states))
    result = result._replace(**records_so_far()._asdict())
    return Driven(result, done, interrupted)


def _compile(make_program, num_particles: int, num_steps: int, chunk: int, masked: bool):
    """Jitted ``start``, ``chunk`` and ``finish`` over a batch of runs (``lax.map``)."""

    def mapped(fn, *batched):
        return jax.lax.map(lambda args: fn(*args), batched)

    @jax.jit
    def start_all(keys, inputs):
        def one(key, inp):
            return engine.start(key, make_program(inp).fk, num_particles, num_steps)

        return mapped(one, keys, inputs)

    @jax.jit
    def chunk_all(keys, inputs, states, first_step):
        def one(key, inp, state):
            p = make_program(inp)
            return engine.advance(
                key,
                p.fk,
                state,
                first_step,
                chunk,
                num_steps if masked else None,
                p.resampling,
                p.ess_threshold,
                p.rejuvenate,
                p.summary_fn,
                p.resample_every,
                p.unroll,
                p.record_ancestors,
            )

        return mapped(one, keys, inputs, states)

    @jax.jit
    def finish_all(keys, inputs, states):
        def one(key, inp, state):
            p = make_program(inp)
            no_records = engine.StepRecord(*([None] * len(engine.StepRecord._fields)))
            return engine.finish(key, state, no_records, p.resampling, p.resample_at_end)

        return mapped(one, keys, inputs, states)

    return start_all, chunk_all, finish_all


def _join_steps(*pieces: np.ndarray) -> np.ndarray:
    return np.concatenate(pieces, axis=1)


def drive_one(program: engine.Program, key: jax.Array, num_particles: int, **options) -> Driven:
    """:func:`drive` for a single run of a fixed program; the run axis is removed.

    Pass ``cache_key`` (an identity of everything the program depends on) to reuse the
    compiled chunks across calls."""
    driven = drive(lambda _: program, jnp.asarray(key)[None], None, num_particles, **options)
    result = jax.tree.map(lambda a: a[0], driven.result)
    return driven._replace(result=result)
