"""lvm-rollout serving: the LVM model families, the concept bank and the Ray Serve application."""

__version__ = "0.1.0"
