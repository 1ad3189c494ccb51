"""lvm-rollout operator: progressive delivery of latent-vector-model versions on Ray Serve."""

__version__ = "0.1.0"
