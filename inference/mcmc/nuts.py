"""The No-U-Turn Sampler with multinomial sampling, as implemented in Stan.

Hoffman & Gelman (2014), "The No-U-Turn Sampler", JMLR 15, algorithms 3 and 6, with the
changes of Betancourt (2017), "A conceptual introduction to Hamiltonian Monte Carlo"
(arXiv:1701.02434), appendix A:

* **Multinomial sampling** (A.3.1-A.3.2). Every point :math:`z_n` of the trajectory has weight
  :math:`w_n = \\exp(-H(z_n)) / \\exp(-H(z_0))`. Within a new subtree a point is chosen
  proportionally to :math:`w_n` (done here progressively, leaf by leaf: the new leaf replaces
  the subtree's candidate with probability :math:`w_\\text{leaf} / W_\\text{subtree}`, which
  gives each leaf probability :math:`w_n / W_\\text{subtree}`). When the new subtree is merged
  into the old trajectory the candidate is updated by *biased progressive sampling*: it is
  replaced by the subtree's candidate with probability
  :math:`\\min(1, W_\\text{new} / W_\\text{old})` (Betancourt's appendix A.3.2),
  which favours points far from the start and keeps the transition reversible.
* **Generalised no-U-turn criterion** (A.4.2). A (sub)trajectory with summed momentum
  :math:`\\rho = \\sum_n p_n` and end velocities :math:`p^\\sharp_\\pm = M^{-1} p_\\pm` has
  turned once :math:`p^\\sharp_- \\cdot \\rho \\le 0` or :math:`p^\\sharp_+ \\cdot \\rho \\le 0`
  (:func:`inference.mcmc.metrics.is_turning`). As in Stan (>= 2.23) the criterion is checked
  at every merge of two subtrees, over the merged subtree and also over each half extended by
  the neighbouring point of the other half (this catches turns that fall exactly between the
  two halves).

The trajectory is built iteratively: the outer ``while_loop`` doubles the trajectory in a
random direction (depth :math:`j` adds :math:`2^j` leapfrog steps); an inner ``while_loop``
integrates the new subtree leaf by leaf. The merges of the implicit binary tree inside the new
subtree are checked from checkpoints: for each size :math:`2^k` the most recent leaf that
*starts* a block of that size and the most recent leaf that *ends* one, with the running
momentum sum before it. A block of size :math:`2^k` ends at leaf :math:`n` (0-based, counted
in building order) when :math:`(n+1) \\bmod 2^k = 0`; it started at the last leaf with
:math:`n \\bmod 2^k = 0`, its right half started at the last start of size :math:`2^{k-1}`, and
its left half ended at the previous end of size :math:`2^{k-1}`. The criterion is symmetric in
the two ends, so subtrees built backwards in time are checked the same way.

A subtree stops (and is discarded, with its candidate) as soon as one of its merges has turned
or a leaf diverges, i.e. its energy error :math:`H(z_n) - H(z_0)` exceeds ``max_energy_error``
(1000 as in Stan). The transition stops when the merged trajectory turns, a subtree is
discarded, or ``max_tree_depth`` subtrees have been merged (at most
:math:`2^\\text{max\\_tree\\_depth} - 1` leapfrog steps).

Reported diagnostics (as Stan's ``accept_stat__``, ``n_leapfrog__``, ``treedepth__``):
``acceptance_rate`` is the mean over all leaves built of
:math:`\\min(1, \\exp(H(z_0) - H(z_n)))`, ``n_steps`` the number of leapfrog steps,
``tree_depth`` the number of subtrees merged, ``energy`` the Hamiltonian of the chosen point.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import integrators, metrics
from inference.mcmc.base import Info, State
from inference.mcmc.integrators import IntegratorState
from inference.mcmc.metrics import is_turning


class _Subtree(NamedTuple):
    """Loop state of the inner while_loop that integrates one new subtree."""

    leaf: IntegratorState  # last leaf built (initially the end of the old trajectory)
    n: Array  # number of leaves built
    rho: Array  # sum of the momenta of the leaves built
    log_weight: Array  # log sum of the leaf weights exp(H0 - H)
    proposal: State
    proposal_energy: Array
    start_p: Array  # (D, d) checkpoints: momentum of the last leaf starting a 2^k block;
    # row D - 1 is the subtree's first leaf (no later leaf of a subtree of at most 2^(D-1)
    # leaves starts a block of that size)
    start_p_sharp: Array  # (D, d)
    start_rho: Array  # (D, d) momentum sum before that leaf
    end_p_sharp: Array  # (D, d) checkpoints: last leaf ending a 2^k block
    end_rho: Array  # (D, d)
    sum_accept: Array
    turning: Array
    diverging: Array


class _Trajectory(NamedTuple):
    """Loop state of the outer while_loop that doubles the trajectory."""

    left: IntegratorState
    left_p_sharp: Array
    right: IntegratorState
    right_p_sharp: Array
    rho: Array
    log_weight: Array
    proposal: State
    proposal_energy: Array
    iteration: Array  # subtrees attempted
    depth: Array  # subtrees merged
    n_steps: Array
    sum_accept: Array
    stop: Array
    diverging: Array


def _select(pred, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def _build_subtree(
    leaf_uniform,
    first_leaf_index,
    start: IntegratorState,
    signed_step_size,
    depth,
    h0,
    logdensity_fn,
    inverse_mass_matrix,
    max_tree_depth: int,
    max_energy_error,
) -> _Subtree:
    """Integrate up to ``2**depth`` leaves from ``start``; stop early on a turn or divergence.

    ``leaf_uniform(i)`` is the uniform variate of the i-th leaf of the whole transition.
    """
    d = start.position.shape[0]
    dtype = start.position.dtype
    ks = jnp.arange(max_tree_depth, dtype=jnp.int32)
    sizes = jnp.left_shift(jnp.int32(1), ks)
    num_leaves = jnp.left_shift(jnp.int32(1), depth)
    zeros_dk = jnp.zeros((max_tree_depth, d), dtype)

    def cond(t: _Subtree):
        return (t.n < num_leaves) & ~t.turning & ~t.diverging

    def body(t: _Subtree) -> _Subtree:
        leaf = integrators.leapfrog(t.leaf, logdensity_fn, signed_step_size, inverse_mass_matrix)
        h = integrators.hamiltonian(leaf, inverse_mass_matrix)
        p_sharp = metrics.velocity(leaf.momentum, inverse_mass_matrix)
        log_w = h0 - h  # -inf where the energy is not finite
        diverging = -log_w > max_energy_error
        sum_accept = t.sum_accept + jnp.exp(jnp.minimum(log_w, 0.0))

        # Multinomial sampling inside the subtree, progressively: P(leaf) = w_leaf / W.
        log_weight = jnp.logaddexp(t.log_weight, log_w)
        take = jnp.log(leaf_uniform(first_leaf_index + t.n)) < log_w - log_weight
        proposal = _select(take, integrators.to_state(leaf), t.proposal)
        proposal_energy = jnp.where(take, h, t.proposal_energy)

        rho_before = t.rho
        rho = t.rho + leaf.momentum
        n = t.n

        # Checkpoints of the leaves that start a block of size 2^k.
        starts = (n % sizes == 0)[:, None]
        start_p = jnp.where(starts, leaf.momentum, t.start_p)
        start_p_sharp = jnp.where(starts, p_sharp, t.start_p_sharp)
        start_rho = jnp.where(starts, rho_before, t.start_rho)

        # Blocks of size 2^k (k >= 1) completed by this leaf: check the merge of their halves.
        # Row k - 1 of a slice [1:] is level k (the block), of a slice [:-1] level k - 1 (its
        # halves: the right half started at the last start of size 2^(k-1), the left half ended
        # at the previous end of that size). is_turning works row-wise on these (D - 1, d)
        # arrays, so all levels are checked in a few fused operations.
        ends = (n + 1) % sizes == 0
        block_p_sharp, block_rho = start_p_sharp[1:], start_rho[1:]
        # Whole block [s, n].
        turn = is_turning(block_p_sharp, p_sharp, rho - block_rho)
        # Left half extended by the first leaf m of the right half: [s, m].
        turn |= is_turning(
            block_p_sharp, start_p_sharp[:-1], start_rho[:-1] + start_p[:-1] - block_rho
        )
        # Right half extended by the last leaf m - 1 of the left half: [m - 1, n].
        turn |= is_turning(t.end_p_sharp[:-1], p_sharp, rho - t.end_rho[:-1])
        turning = jnp.any(ends[1:] & turn)

        # Checkpoints of the leaves that end a block of size 2^k (after reading them above).
        end_p_sharp = jnp.where(ends[:, None], p_sharp, t.end_p_sharp)
        end_rho = jnp.where(ends[:, None], rho_before, t.end_rho)

        return _Subtree(
            leaf=leaf,
            n=n + 1,
            rho=rho,
            log_weight=log_weight,
            proposal=proposal,
            proposal_energy=proposal_energy,
            start_p=start_p,
            start_p_sharp=start_p_sharp,
            start_rho=start_rho,
            end_p_sharp=end_p_sharp,
            end_rho=end_rho,
            sum_accept=sum_accept,
            turning=turning,
            diverging=diverging,
        )

    init = _Subtree(
        leaf=start,
        n=jnp.zeros((), jnp.int32),
        rho=jnp.zeros((d,), dtype),
        log_weight=jnp.full((), -jnp.inf, dtype),
        proposal=integrators.to_state(start),
        proposal_energy=jnp.full((), jnp.inf, dtype),
        start_p=zeros_dk,
        start_p_sharp=zeros_dk,
        start_rho=zeros_dk,
        end_p_sharp=zeros_dk,
        end_rho=zeros_dk,
        sum_accept=jnp.zeros((), dtype),
        turning=jnp.zeros((), bool),
        diverging=jnp.zeros((), bool),
    )
    return jax.lax.while_loop(cond, body, init)


def step(
    key: Array,
    state: State,
    logdensity_fn,
    step_size,
    inverse_mass_matrix: Array,
    max_tree_depth: int = 10,
    max_energy_error: float = 1000.0,
) -> tuple[State, Info]:
    """One multinomial NUTS transition (see the module docstring for the algorithm)."""
    metrics.check_inverse_mass_matrix(inverse_mass_matrix)
    dtype = state.position.dtype
    key_p, key_dir, key_merge, key_leaf = jax.random.split(key, 4)
    p0 = metrics.sample_momentum(key_p, inverse_mass_matrix, dtype=dtype)
    # One direction and one merge variate per doubling, drawn up front; the variate of leaf i
    # comes from fold_in(key_leaf, i) inside the loop (cheaper to run than drawing
    # 2^max_tree_depth variates per transition, of which ~10 are used).
    forwards = jax.random.bernoulli(key_dir, shape=(max_tree_depth,))
    merge_uniforms = jax.random.uniform(key_merge, (max_tree_depth,), dtype=dtype)

    def leaf_uniform(i):
        return jax.random.uniform(jax.random.fold_in(key_leaf, i), dtype=dtype)

    z0 = integrators.from_state(state, p0)
    h0 = integrators.hamiltonian(z0, inverse_mass_matrix)
    p_sharp0 = metrics.velocity(p0, inverse_mass_matrix)
    step_size = jnp.asarray(step_size, dtype)

    def cond(t: _Trajectory):
        return (t.iteration < max_tree_depth) & ~t.stop

    def body(t: _Trajectory) -> _Trajectory:
        forward = forwards[t.iteration]
        near = _select(forward, t.right, t.left)  # the end the new subtree grows from
        near_p_sharp = jnp.where(forward, t.right_p_sharp, t.left_p_sharp)
        far_p_sharp = jnp.where(forward, t.left_p_sharp, t.right_p_sharp)
        sub = _build_subtree(
            leaf_uniform,
            t.n_steps,
            near,
            jnp.where(forward, step_size, -step_size),
            t.iteration,
            h0,
            logdensity_fn,
            inverse_mass_matrix,
            max_tree_depth,
            max_energy_error,
        )
        valid = ~(sub.turning | sub.diverging)
        leaf_p_sharp = metrics.velocity(sub.leaf.momentum, inverse_mass_matrix)
        first_p, first_p_sharp = sub.start_p[-1], sub.start_p_sharp[-1]  # the first leaf

        # Biased progressive sampling between the old trajectory and the new subtree.
        accept = valid & (jnp.log(merge_uniforms[t.iteration]) < sub.log_weight - t.log_weight)
        proposal = _select(accept, sub.proposal, t.proposal)
        proposal_energy = jnp.where(accept, sub.proposal_energy, t.proposal_energy)
        log_weight = jnp.where(valid, jnp.logaddexp(t.log_weight, sub.log_weight), t.log_weight)

        left = _select(valid & ~forward, sub.leaf, t.left)
        left_p_sharp = jnp.where(valid & ~forward, leaf_p_sharp, t.left_p_sharp)
        right = _select(valid & forward, sub.leaf, t.right)
        right_p_sharp = jnp.where(valid & forward, leaf_p_sharp, t.right_p_sharp)
        rho = t.rho + sub.rho

        # Generalised criterion over the merged trajectory and across the junction.
        turning = is_turning(left_p_sharp, right_p_sharp, rho)
        turning |= is_turning(far_p_sharp, first_p_sharp, t.rho + first_p)
        turning |= is_turning(near_p_sharp, leaf_p_sharp, sub.rho + near.momentum)

        return _Trajectory(
            left=left,
            left_p_sharp=left_p_sharp,
            right=right,
            right_p_sharp=right_p_sharp,
            rho=jnp.where(valid, rho, t.rho),
            log_weight=log_weight,
            proposal=proposal,
            proposal_energy=proposal_energy,
            iteration=t.iteration + 1,
            depth=t.depth + valid.astype(jnp.int32),
            n_steps=t.n_steps + sub.n,
            sum_accept=t.sum_accept + sub.sum_accept,
            stop=~valid | turning,
            diverging=sub.diverging,
        )

    init = _Trajectory(
        left=z0,
        left_p_sharp=p_sharp0,
        right=z0,
        right_p_sharp=p_sharp0,
        rho=p0,
        log_weight=jnp.zeros((), dtype),
        proposal=state,
        proposal_energy=h0,
        iteration=jnp.zeros((), jnp.int32),
        depth=jnp.zeros((), jnp.int32),
        n_steps=jnp.zeros((), jnp.int32),
        sum_accept=jnp.zeros((), dtype),
        stop=jnp.zeros((), bool),
        diverging=jnp.zeros((), bool),
    )
    t = jax.lax.while_loop(cond, body, init)
    info = Info(
        acceptance_rate=t.sum_accept / jnp.maximum(t.n_steps, 1).astype(dtype),
        diverging=t.diverging,
        energy=t.proposal_energy,
        n_steps=t.n_steps,
        tree_depth=t.depth,
    )
    return t.proposal, info
