"""Ready-made models: posteriordb posteriors, state-space models, Gaussian-mixture score models,
and small neural score models."""
