"""The package version (one place: ``mmv_torch.__version__``, ``mmv-torch --version``, the model cards)."""

__version__ = "0.2.0"
