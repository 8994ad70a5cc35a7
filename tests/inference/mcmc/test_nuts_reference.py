"""The iterative NUTS transition against a recursive reference, transition by transition.

:mod:`inference.mcmc.nuts` builds each subtree leaf by leaf and checks the no-U-turn criteria
of the implicit binary tree from checkpoints (two per tree level), in building order. The
reference below is the textbook recursion (Hoffman & Gelman 2014, alg. 6; the criteria of
Stan's ``base_nuts``): a tree of depth k is two trees of depth k - 1, and each merge is checked
in *time* order, left half (L) and right half (R):

* whole tree: ``turn(L.left, R.right, L.rho + R.rho)``;
* left half extended by the first point of the right: ``turn(L.left, R.left, L.rho + p_R.left)``;
* right half extended by the last point of the left: ``turn(L.right, R.right, R.rho + p_L.right)``.

Both use the same variates (momentum, directions, merge and leaf uniforms, derived from the key
as :func:`inference.mcmc.nuts.step` derives them) and run in float64, so the leapfrog points
agree to rounding and every discrete outcome (tree depth, number of leapfrog steps, divergence,
which point is proposed) must agree exactly: a checkpoint off by one level, a criterion applied
in building instead of time order, or a wrong leaf index would show here on some transition.
"""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

from inference.mcmc import metrics, nuts
from inference.mcmc.base import init

MEAN = np.array([1.0, -2.0, 0.5])
COV = np.array([[0.25, 0.6, -0.15], [0.6, 4.0, 0.4], [-0.15, 0.4, 1.0]])
PREC = np.linalg.inv(COV)


def logdensity(x):
    r = x - jnp.asarray(MEAN)
    return -0.5 * r @ jnp.asarray(PREC) @ r


def reference_transition(x0, eps, imm, p0, forwards, merge_u, leaf_u, max_depth, max_err=1000.0):
    """Recursive multinomial NUTS in numpy float64 (module docstring); returns
    ``(proposal, n_steps, depth, diverging, acceptance_rate, decisive)``, the last counting
    the merges that one extended criterion alone stopped, by ``(level, criterion)``: level
    ``"subtree"`` (inside a doubling) or ``"trajectory"`` (old trajectory + new subtree),
    criterion ``"left"`` (left half + first point of the right) or ``"right"``. ``imm`` is the
    (dense) inverse mass matrix."""

    def hamiltonian(x, p):
        r = x - MEAN
        return 0.5 * r @ PREC @ r + 0.5 * p @ imm @ p  # kinetic energy with M^-1 = imm

    def point(x, p):
        return {"x": x, "p": p, "ps": imm @ p}

    def turn(a, b, rho):
        return bool(a @ rho <= 0 or b @ rho <= 0)

    h0 = hamiltonian(x0, p0)
    run = {"n": 0, "sum_accept": 0.0, "diverging": False, "decisive": Counter()}

    def leaf(z, step, sub):
        """One leapfrog step; the leaf's multinomial update of the subtree's candidate."""
        p_half = z["p"] - 0.5 * step * PREC @ (z["x"] - MEAN)
        x = z["x"] + step * imm @ p_half
        p = p_half - 0.5 * step * PREC @ (x - MEAN)
        log_w = h0 - hamiltonian(x, p)
        i = run["n"]
        run["n"] += 1
        run["sum_accept"] += min(1.0, np.exp(log_w))
        if -log_w > max_err:
            run["diverging"] = True
            return None
        sub["log_w"] = np.logaddexp(sub["log_w"], log_w)
        if np.log(leaf_u[i]) < log_w - sub["log_w"]:
            sub["proposal"] = x
        z = point(x, p)
        return {"left": z, "right": z, "rho": p}

    def merge(left, right, level):
        """Two adjacent trees in time order; ``None`` if any of the three criteria turned."""
        rho = left["rho"] + right["rho"]
        whole = turn(left["left"]["ps"], right["right"]["ps"], rho)
        left_ext = turn(left["left"]["ps"], right["left"]["ps"], left["rho"] + right["left"]["p"])
        right_ext = turn(
            left["right"]["ps"], right["right"]["ps"], right["rho"] + left["right"]["p"]
        )
        if not whole and left_ext != right_ext:
            run["decisive"][level, "left" if left_ext else "right"] += 1
        if whole or left_ext or right_ext:
            return None
        return {"left": left["left"], "right": right["right"], "rho": rho}

    def build(start, depth, direction, sub):
        """A tree of 2**depth leaves from ``start``, or ``None`` once it turns or diverges."""
        if depth == 0:
            return leaf(start, direction * eps, sub)
        first = build(start, depth - 1, direction, sub)
        if first is None:
            return None
        second = build(first["right" if direction > 0 else "left"], depth - 1, direction, sub)
        if second is None:
            return None
        return merge(first, second, "subtree") if direction > 0 else merge(second, first, "subtree")

    z0 = point(x0, p0)
    tree = {"left": z0, "right": z0, "rho": p0}
    proposal, log_w_total, depth = x0, 0.0, 0
    for j in range(max_depth):
        direction = 1 if forwards[j] else -1
        sub = {"log_w": -np.inf, "proposal": None}
        new = build(tree["right" if direction > 0 else "left"], j, direction, sub)
        if new is None:
            break
        # biased progressive sampling between the old trajectory and the new subtree
        if np.log(merge_u[j]) < sub["log_w"] - log_w_total:
            proposal = sub["proposal"]
        log_w_total = np.logaddexp(log_w_total, sub["log_w"])
        depth += 1
        tree = merge(tree, new, "trajectory") if direction > 0 else merge(new, tree, "trajectory")
        if tree is None:
            break
    accept = run["sum_accept"] / run["n"]
    return proposal, run["n"], depth, run["diverging"], accept, run["decisive"]


def test_iterative_nuts_equals_the_recursive_reference():
    """600 transitions, dense metric (the tree logic is the same for both metric branches,
    whose agreement ``test_kernels`` checks)."""
    imm = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]])
    max_depth, num = 6, 600
    rng = np.random.default_rng(0)
    starts = MEAN + rng.normal(size=(num, 3)) * np.sqrt(np.diag(COV))
    # capped or deep trees, long ones (where the extended criteria decide most often), typical,
    # and divergent
    step_sizes = np.resize([0.02, 0.05, 0.1, 0.2, 0.4, 6.0], num)
    with jax.enable_x64(True):

        @jax.jit
        def transition(key, x0, eps):
            """One NUTS transition and its variates, derived from the key as nuts.step does.
            (Called per transition: under vmap the multi-dimensional Threefry of the variates
            compiles for seconds on XLA:CPU.)"""
            new, info = nuts.step(key, init(x0, logdensity), logdensity, eps, imm, max_depth)
            key_p, key_dir, key_merge, key_leaf = jax.random.split(key, 4)
            leaf_u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key_leaf, i)))
            variates = (
                metrics.sample_momentum(key_p, jnp.asarray(imm), jnp.float64),
                jax.random.bernoulli(key_dir, shape=(max_depth,)),
                jax.random.uniform(key_merge, (max_depth,), jnp.float64),
                leaf_u(jnp.arange(2**max_depth)),
            )
            return new.position, info, variates

        runs = [
            jax.tree.map(np.asarray, transition(jax.random.key(t), starts[t], step_sizes[t]))
            for t in range(num)
        ]
    outcomes, decisive = set(), Counter()
    for t, (position, info, variates) in enumerate(runs):
        ref = reference_transition(starts[t], step_sizes[t], imm, *variates, max_depth)
        proposal, n_steps, depth, diverging, accept, decided = ref
        got = (int(info.n_steps), int(info.tree_depth), bool(info.diverging))
        assert got == (n_steps, depth, diverging), (t, step_sizes[t], got, ref[1:])
        np.testing.assert_allclose(position, proposal, rtol=0, atol=1e-10)
        # (atol: XLA flushes denormal acceptance rates of divergent transitions to zero)
        np.testing.assert_allclose(info.acceptance_rate, accept, rtol=1e-10, atol=1e-300)
        outcomes.add((depth, diverging, depth == max_depth))
        decisive += decided
    # the cases covered: several depths, divergences, the depth cap, and, at both levels,
    # merges that one extended criterion alone stops (each in ~0.3-1.5% of the transitions
    # here, hence the 600 of them)
    assert len({d for d, _, _ in outcomes}) >= 4 and any(d for _, d, _ in outcomes)
    assert any(cap for _, _, cap in outcomes)
    levels, criteria = ("subtree", "trajectory"), ("left", "right")
    assert all(decisive[lv, c] >= 1 for lv in levels for c in criteria), decisive
