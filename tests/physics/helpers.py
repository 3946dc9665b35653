"""Re-export of the public test helpers."""

from proda_engine.physics.testing import random_forcing, random_theta

__all__ = ["random_forcing", "random_theta"]
