"""Shared test helpers (media and model factories, the official reference harness, distributed workers)
and the fixtures' folder :data:`ASSETS`."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
"""``tests/assets/``: the small committed fixtures (official reference arrays, DMVR outputs, key maps)."""
