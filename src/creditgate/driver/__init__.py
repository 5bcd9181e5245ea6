"""Talking to Redis: the pipelined hiredis connection, RESP encoding, combining, clients, failures.

It knows Redis, not plans: the engine hands it encoded commands and a ``Combiner``.
"""
