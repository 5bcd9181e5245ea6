"""Pure domain: money in micro-units, the plan catalog, pricing, scopes and the calendar.

Nothing here talks to Redis or gRPC, so the reference model and the tests can use it directly.
"""
