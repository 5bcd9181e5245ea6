"""creditgate: a gRPC credit gate that charges every billable action before it runs."""

__version__ = "0.1.0"
