"""Chains sharded over 4 forced CPU devices give the same numbers as on one device.

XLA may order a reduction differently in a partitioned program, and MCMC amplifies
last-bit differences over iterations, so the comparison runs in float64, where the draws must
agree to 1e-9: a wrong key derivation or a mixed-up chain would differ at order one.
"""

import os
import subprocess
import sys

import pytest

COMMON = """
import jax, numpy as np, numpyro, numpyro.distributions as dist
import ppl
assert len(jax.devices()) == 4, jax.devices()

def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("n", 10):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)

y = np.linspace(-1.0, 2.0, 10)
"""

CHECKS = {
    "mcmc": """
kw = dict(y=y, chains=4, warmup=40, draws=30, seed=3, progress_bar=False)
one = ppl.mcmc(model, devices=1, **kw)
four = ppl.mcmc(model, devices=4, **kw)
# Same keys per chain, so the same trajectories; but the partitioned program may round a
# reduction differently (seen: the log density 1 ulp apart at the first draw), and the dynamics
# amplify that slowly (4e-9 after these 70 iterations): equal up to rounding, same tree sizes.
np.testing.assert_allclose(one.samples["mu"], four.samples["mu"], rtol=1e-6, atol=1e-6)
np.testing.assert_array_equal(one.stats["n_steps"], four.stats["n_steps"])
print("SAME")
""",
    "smc": """
smc_kw = dict(y=y, particles=64, runs=4, seed=1)
a = ppl.smc(model, devices=1, **smc_kw)
b = ppl.smc(model, devices=4, **smc_kw)
np.testing.assert_allclose(a.samples["mu"], b.samples["mu"], rtol=1e-9, atol=1e-9)
np.testing.assert_allclose(a.log_evidence, b.log_evidence, rtol=1e-9)
print("SAME")
""",
}


# The SMC runs shard the same way (leading axis over devices); that check is in the slow
# suite to keep the default run within its time budget.
@pytest.mark.parametrize("backend", ["mcmc", pytest.param("smc", marks=pytest.mark.slow)])
def test_one_device_and_four_devices_give_the_same_draws(backend):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_ENABLE_X64="1")
    if os.environ.get("PPL_TEST_XLA_OPTIMIZE", "0") != "1":  # as tests/conftest.py does
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    env.pop("JAX_PLATFORMS", None)
    script = COMMON + CHECKS[backend]
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "SAME" in result.stdout, result.stderr[-4000:]


def test_a_devices_list_is_checked_before_anything_runs():
    """``devices=["cpu"]`` failed in ``jax.device_put`` after the model was compiled, and a
    device listed twice with a bare ``AssertionError`` from JAX."""
    import jax

    from ppl.devices import select_devices

    device = jax.devices()[0]
    with pytest.raises(TypeError, match="devices must hold jax devices.*got 'cpu'"):
        select_devices(["cpu"], 4, "chains")
    with pytest.raises(ValueError, match="more than once"):
        select_devices([device, device], 4, "chains")
    assert select_devices([device], 4, "chains") == [device]
