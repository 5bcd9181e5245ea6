"""Test helpers that ship with creditgate: a pure-Python reference model of the pool rules."""

from creditgate.testing.reference import ReferenceModel

__all__ = ["ReferenceModel"]
