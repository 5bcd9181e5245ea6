"""The Redis engine: one Lua script per operation, every key of an account in one hash slot."""

from creditgate.engine.engine import Engine
from creditgate.engine.keys import KeySpace

__all__ = ["Engine", "KeySpace"]
