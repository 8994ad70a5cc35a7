"""Wall time of FKC through the public API, ``ppl.sample_diffusion``, against sampling the plain
prior the same way (same score, particles and steps), warm, best of ``--repeats``.

Unlike ``bench/fkc_overhead.py`` (the jitted samplers alone), this includes what a user's call
pays on the host: the chunked driver, the records' transfer, the finite-sample check and the
``diagnose()`` that a weighted run performs (timed on its own too). Both with and without the
progress bar (20 chunks). The target is ``ppl.anneal`` (beta = 3) of the exact four-mode GMM.

    python bench/fkc_api_overhead.py [--particles 10000] [--steps 500] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp

import ppl
from inference.diffusion.sde import VPSDE
from models.gmm import GaussianMixture

SETTINGS = {
    "every step": {},
    "resample_every=10, unroll=True": {"resample_every": 10, "unroll": True},
    "resample_every=25, unroll=True": {"resample_every": 25, "unroll": True},
}


def best(fn, repeats):
    fn()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    n, steps = args.particles, args.steps
    sde = VPSDE()
    means = jnp.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])
    gmm = GaussianMixture(jnp.ones(4) / 4, means, jnp.full((4,), 0.16))
    prior = ppl.DiffusionPrior(gmm.score_fn(sde), sde, event_shape=(2,))
    target = ppl.anneal(prior, 3.0)
    print(f"device: {jax.devices()[0].platform}, particles {n}, steps {steps}")
    print("| progress bar | sampler | wall time (ms) | / plain |")
    print("|---|---|---:|---:|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k = 25 degenerates on this target: diagnose() says so
        for bar in (False, True):

            def plain(bar=bar):
                return ppl.sample_diffusion(prior, n, steps=steps, progress_bar=bar)

            t_plain = best(plain, args.repeats)
            print(f"| {bar} | plain prior (Euler-Maruyama) | {1e3 * t_plain:.2f} | 1.00 |")
            for label, options in SETTINGS.items():

                def fkc(options=options, bar=bar):
                    return ppl.sample_diffusion(target, n, steps=steps, progress_bar=bar, **options)

                t = best(fkc, args.repeats)
                print(f"| {bar} | FKC, {label} | {1e3 * t:.2f} | {t / t_plain:.2f} |")
        res = ppl.sample_diffusion(target, n, steps=steps, progress_bar=False)
    t_diag = best(res.diagnose, 3)
    print(f"diagnose() alone: {1e3 * t_diag:.2f} ms")


if __name__ == "__main__":
    main()
