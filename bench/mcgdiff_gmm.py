"""The Gaussian-mixture inverse-problem benchmark of MCGdiff (Cardoso et al. 2024, ICLR, Sec. 5.1).

Protocol (the paper's experiment script, as summarised in the team brief, Sec. 6.2):

* prior: 25 components, means ``mu_ij = (8i, 8j, 8i, 8j, ...)`` for ``i, j in {-2..2}``,
  identity covariances, weights ``∝ eps^2``, ``eps ~ N(0, 1)^25`` drawn once per dimension;
* ``A = U diag(s) V_{1:d_y}^T`` from the SVD of a standard normal ``(d_y, d)`` matrix, with the
  singular values replaced by sorted ``U(0, 1)`` draws; ``sigma_y = u max(s)``, ``u ~ U(0, 1)``;
  ``y = A x* + sigma_y e`` with ``x* ~ prior``;
* reference: exact posterior draws (closed form, Matheron's rule), as many as sampler draws;
* metric: sliced Wasserstein-1 over 100 random directions (mean of the 1-d W1);
* exact noised score ``sum_k r_k(x) (a_t mu_k - x) / (a_t^2 + s_t^2)``.

Differences from the paper: the prior is the continuous VP SDE (beta in [0.1, 20]) on a uniform
grid of ``--steps`` steps instead of the paper's descending-beta DDPM array; DDPM kernels
(eta = 1); MCGdiff returns one resampled cloud of ``N`` particles (paper: 2 clouds of 1000).
DPS uses the paper's normalised step with ``zeta' = 0.1``.

Usage: ``python bench/mcgdiff_gmm.py --quick`` (d = 8, 10 problems per d_y, N = 1000) or
``python bench/mcgdiff_gmm.py`` (d in {8, 80, 800}, 20 problems, N = 2000). Prints a markdown
table: mean SW1 +- 1.96 SE over problems, the exact-vs-exact floor, and seconds per problem
(after compilation).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.posterior.common import sliced_wasserstein_1
from inference.diffusion.posterior.dps import sample_dps
from inference.diffusion.posterior.mcgdiff import sample_mcgdiff
from inference.diffusion.posterior.tds import gaussian_twist, sample_tds
from inference.diffusion.sde import VPSDE

SDE = VPSDE()


def make_means(d: int) -> jnp.ndarray:
    ij = jnp.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], jnp.float32)
    return 8.0 * jnp.tile(ij, (1, d // 2))


def score_fn_factory(log_w, means):
    def score_fn(x, t):
        a, s = SDE.marginal_mean_coeff(t), SDE.marginal_std(t)
        v = a**2 + s**2
        diff = a * means[None] - x[:, None, :]  # (N, K, d)
        logits = log_w - 0.5 * jnp.sum(diff**2, -1) / v
        r = jax.nn.softmax(logits, -1)
        return jnp.einsum("nk,nkd->nd", r, diff) / v

    return score_fn


def make_problem(key, d, d_y, log_w, means):
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    U, _, Vt = jnp.linalg.svd(jax.random.normal(k1, (d_y, d)), full_matrices=False)
    s = -jnp.sort(-jax.random.uniform(k2, (d_y,)))
    A = U @ jnp.diag(s) @ Vt
    sigma = jax.random.uniform(k3) * s[0]
    comp = jax.random.categorical(k4, log_w)
    x_star = means[comp] + jax.random.normal(k5, (d,))
    y = A @ x_star + sigma * jax.random.normal(k6, (d_y,))
    return A, y, sigma


def exact_posterior_sample(key, n, A, y, sigma, log_w, means):
    """Identity covariances: ``w~_k ∝ w_k N(y; A mu_k, G)``, ``G = A A^T + sigma^2 I``;
    draws by Matheron's rule ``m_k + z - A^T G^{-1} (A z + sigma e)``."""
    d_y, d = A.shape
    G = A @ A.T + sigma**2 * jnp.eye(d_y)
    resid = y - means @ A.T
    sol = jnp.linalg.solve(G, resid.T).T
    logits = log_w - 0.5 * jnp.sum(resid * sol, -1)
    m = means + sol @ A
    k1, k2, k3 = jax.random.split(key, 3)
    comp = jax.random.categorical(k1, logits, shape=(n,))
    z = jax.random.normal(k2, (n, d))
    e = jax.random.normal(k3, (n, d_y))
    corr = jnp.linalg.solve(G, (z @ A.T + sigma * e).T).T @ A
    return m[comp] + z - corr


def run_config(d, d_y, problems, n, steps, seed):
    key = jax.random.PRNGKey(seed)
    kw, kp = jax.random.split(key)
    w = jax.random.normal(kw, (25,)) ** 2
    log_w = jnp.log(w / w.sum())
    means = make_means(d)
    score_fn = score_fn_factory(log_w, means)

    def methods():
        def mcg(k, A, y, s):
            return sample_mcgdiff(k, score_fn, SDE, A, y, s, n, steps).particles

        def tds(k, A, y, s):
            def ll(x):
                return -0.5 * jnp.sum((y - A @ x) ** 2) / s**2

            tw = gaussian_twist(SDE, A, y, s)
            return sample_tds(k, score_fn, SDE, ll, d, n, steps, log_twist_fn=tw).particles["x"]

        def dps(k, A, y, s):
            def ll(x):
                return -0.5 * jnp.sum((y - A @ x) ** 2) / s**2

            return sample_dps(
                k, score_fn, SDE, ll, d, n, steps, scale=0.1, residual_fn=lambda x0: y - A @ x0
            ).particles

        return {"MCGdiff": mcg, "TDS": tds, "DPS": dps}

    probs = [make_problem(k, d, d_y, log_w, means) for k in jax.random.split(kp, problems)]
    out = {}
    ref_fn = jax.jit(lambda k, A, y, s: exact_posterior_sample(k, n, A, y, s, log_w, means))
    sw_fn = jax.jit(lambda k, x, r: sliced_wasserstein_1(k, x, r, 100))
    floors = []
    refs = []
    for i, (A, y, s) in enumerate(probs):
        k = jax.random.PRNGKey(1000 + i)
        r1 = ref_fn(k, A, y, s)
        r2 = ref_fn(jax.random.fold_in(k, 1), A, y, s)
        refs.append(r1)
        floors.append(float(sw_fn(jax.random.fold_in(k, 2), r2, r1)))
    out["floor"] = (np.mean(floors), np.std(floors), 0.0)
    for name, fn in methods().items():
        f = jax.jit(fn)
        f(jax.random.PRNGKey(0), *probs[0]).block_until_ready()  # compile
        sws, t0 = [], time.perf_counter()
        for i, (A, y, s) in enumerate(probs):
            x = f(jax.random.PRNGKey(i), A, y, s)
            x.block_until_ready()
            sws.append(float(sw_fn(jax.random.PRNGKey(7 + i), x, refs[i])))
        dt = (time.perf_counter() - t0) / problems
        out[name] = (np.nanmean(sws), np.nanstd(sws), dt)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="d = 8 only, 10 problems, N = 1000")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--problems", type=int, default=None)
    ap.add_argument("--particles", type=int, default=None)
    args = ap.parse_args(argv)
    dims = (8,) if args.quick else (8, 80, 800)
    problems = args.problems or (10 if args.quick else 20)
    n = args.particles or (1000 if args.quick else 2000)
    rows = []
    for i_d, d in enumerate(dims):
        for i_y, d_y in enumerate((1, 2, 4)):
            seed = 2**i_d * 3**i_y
            res = run_config(d, d_y, problems, n, args.steps, seed)
            rows.append((d, d_y, res))
            print(f"# done d={d} d_y={d_y}", flush=True)
    names = ["MCGdiff", "TDS", "DPS"]
    print(
        f"\nSW1 (100 directions) vs exact posterior, mean ± 1.96 SE over {problems} problems; "
        f"N = {n}, {args.steps} VP steps; time = seconds per problem (CPU, after compile)\n"
    )
    print(
        "| d | d_y | floor | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"t {m}" for m in names)
        + " |"
    )
    print("|---" * (3 + 2 * len(names)) + "|")
    for d, d_y, res in rows:
        half = {m: 1.96 * res[m][1] / np.sqrt(problems) for m in names}
        cells = [f"{res[m][0]:.2f} ± {half[m]:.2f}" for m in names]
        times = [f"{res[m][2]:.2f}" for m in names]
        print(
            f"| {d} | {d_y} | {res['floor'][0]:.2f} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(times)
            + " |"
        )


if __name__ == "__main__":
    main()
