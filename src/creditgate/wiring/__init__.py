"""How the parts are put together and started: settings, serve, the embedded Redis, the CLI.

Nothing below this package imports it: domain, driver, engine, events, ledger, worker, auth and
transport get plain values and objects from here.
"""
