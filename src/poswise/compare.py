"""Compatibility name of :mod:`poswise.experiments` (``from poswise.compare import
compare`` keeps working)."""
from .experiments import *  # noqa: F401,F403
from .experiments import __all__  # noqa: F401
