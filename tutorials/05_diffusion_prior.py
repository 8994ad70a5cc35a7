"""Tutorial 5: train a small score model, sample it, compute likelihoods, use it as a prior.

1. Train an MLP score model by denoising score matching on a 2-d toy data set (8 Gaussians on
   a circle) — or, in a hurry, load the shipped one trained the same way.
2. Sample it with the reverse SDE and with DDIM, and compare with the data (energy distance).
3. Compute log densities with the probability-flow ODE and compare with the exact mixture.
4. Use it as the prior of a site in a model and sample the posterior of an inverse problem.

``PPL_QUICK=1`` trains for a few hundred steps only (the test suite sets it).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from inference.diffusion import VPSDE, energy_distance
from models import score_mlp

QUICK = os.environ.get("PPL_QUICK") == "1"
data = score_mlp.toy2d_data(4000, seed=1)

# 1. Train (a loss curve comes back; the tqdm bar shows progress), save and reload (.npz).
sde = VPSDE()
params, losses = score_mlp.train(data, sde, steps=300 if QUICK else 10_000, seed=0)
print(f"loss: first {np.mean(losses[:50]):.3f}, last {np.mean(losses[-50:]):.3f}")
score_mlp.save("toy_score.npz", params, sde)
reloaded, _ = score_mlp.load("toy_score.npz", return_sde=True)
x_test, t_test = data[:4], 0.5
same = score_mlp.make_score_fn(reloaded, sde)(x_test, t_test)
assert jnp.array_equal(same, score_mlp.make_score_fn(params, sde)(x_test, t_test))
score_fn, sde = score_mlp.load_toy2d()  # the shipped model, trained for 10,000 steps

# 2. Sample and compare with the data.
prior = ppl.DiffusionPrior(score_fn, sde, event_shape=(2,))
for method in ("euler_maruyama", "ddim"):
    res = ppl.sample_diffusion(prior, num_samples=2000, steps=200, seed=0, method=method)
    distance = float(energy_distance(res.samples, data[:2000]))
    print(f"{method:>15}: energy distance to the data {distance:+.4f}")

# 3. Log densities through the probability-flow ODE against the exact mixture.
points = data[:5]
estimate = np.asarray(prior.log_prob(points))
exact = np.asarray(score_mlp.toy2d_gmm().logpdf(points))
print("log p(x): ODE estimate", np.round(estimate, 2), "exact", np.round(exact, 2))


# 4. The diffusion model as the prior of an inverse problem: observe x1 + x2 with noise.
def model(y):
    x = ppl.sample("x", prior)
    ppl.sample("y", dist.Normal(x[0] + x[1], 0.3), obs=y)


post = ppl.smc(model, jnp.array(2.5), particles=500 if QUICK else 2000, seed=0, steps=100)
x = post.samples["x"][0]
print(f"posterior mean of x {np.round(x.mean(0), 2)}; log evidence {post.log_evidence:.2f}")
print(f"posterior of x1 + x2: {np.mean(x.sum(1)):.2f} +- {np.std(x.sum(1)):.2f} (y = 2.5)")
assert jax.numpy.isfinite(post.log_evidence)
