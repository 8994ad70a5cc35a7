"""Speed-up from sharding particles / chains over 1, 2 and 4 forced CPU devices.

Each configuration runs in its own process (the device count is fixed when JAX starts), with
``XLA_FLAGS=--xla_force_host_platform_device_count=K``: tempered SMC with many particles
(``ppl.smc(..., devices=K)``) and NUTS with many chains (``ppl.mcmc(..., devices=K)``). The
warm time is the second call (the first compiles). On a CPU the forced devices share the
machine's cores, so the speed-up is bounded by the number of cores.

Run: ``python bench/devices_speedup.py [--particles 20000] [--chains 16]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import sys, time
    import jax, numpy as np, numpyro, numpyro.distributions as dist
    import ppl

    k, particles, chains = (int(a) for a in sys.argv[1:4])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = X @ np.arange(1.0, 6.0) + rng.normal(size=200)

    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 3).expand([5]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        with numpyro.plate("rows", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)

    def timed(fn):
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    smc = timed(lambda: ppl.smc(model, X, y=y, particles=particles, seed=0, devices=k))
    mcmc = timed(
        lambda: ppl.mcmc(model, X, y=y, chains=chains, warmup=300, draws=300,
                         progress_bar=False, devices=k)
    )
    print(f"{k} {smc:.3f} {mcmc:.3f}")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=20000)
    parser.add_argument("--chains", type=int, default=16)
    args = parser.parse_args()
    rows = []
    for k in (1, 2, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={k}")
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(k), str(args.particles), str(args.chains)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append((int(out[-3]), float(out[-2]), float(out[-1])))
    print(f"cores: {os.cpu_count()}; particles {args.particles}, chains {args.chains}")
    print("| devices | tempered SMC warm (s) | speed-up | NUTS warm (s) | speed-up |")
    print("|---|---|---|---|---|")
    for k, smc, mcmc in rows:
        print(
            f"| {k} | {smc:.2f} | {rows[0][1] / smc:.2f} | {mcmc:.2f} | {rows[0][2] / mcmc:.2f} |"
        )


if __name__ == "__main__":
    main()
