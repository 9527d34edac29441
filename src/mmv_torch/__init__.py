"""mmv-torch: Self-Supervised MultiModal Versatile Networks (MMV) in PyTorch."""

__version__ = "0.1.0"
