"""nxr: resource supervisor for ML inference hosts."""

__version__ = "0.1.0"
