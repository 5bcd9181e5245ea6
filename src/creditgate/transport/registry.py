"""Registers servicers with decoders that turn undecodable bytes into a clear INVALID_ARGUMENT.

The generated ``add_*_to_server`` helpers decode with ``FromString``; a request with invalid UTF-8
in a string field then fails inside grpc with INTERNAL before our code runs. These handlers decode
the same messages, but hand a ``Malformed`` marker to the servicer instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from creditgate.transport import limits
from creditgate.transport.errors import Malformed

if TYPE_CHECKING:
    from collections.abc import Callable

    from google.protobuf.descriptor import ServiceDescriptor
    from google.protobuf.message import Message

    from creditgate.transport.guard import Guard


def _decoder(cls: type[Message], method: str) -> Callable[[bytes], Any]:
    """Parse a request of ``method``; refuse it first when its bytes are more than it needs."""
    batch = method == limits.BATCH_METHOD

    def decode(data: bytes) -> Message | Malformed:
        try:
            limits.check_size(method, data)
        except limits.TooLargeError as exc:
            return Malformed(str(exc), grpc.StatusCode.RESOURCE_EXHAUSTED)
        try:
            if batch:
                limits.check_batch(data)
            return cls.FromString(data)
        except (DecodeError, limits.TooLargeError) as exc:
            return Malformed(str(exc) or "cannot be decoded")

    return decode


def add_service(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    messages: dict[str, type[Message]],
    guard: Guard | None = None,
) -> None:
    """Serve every method of ``service`` from the same-named coroutine of ``servicer``.

    With a ``guard``, each call is authenticated and authorized before the servicer runs.
    """
    handlers = {}
    for method in service.methods:
        request_cls = messages[method.input_type.name]
        response_cls = messages[method.output_type.name]
        handler = getattr(servicer, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            guard.wrap(method.name, handler) if guard else handler,
            request_deserializer=_decoder(request_cls, method.name),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # Also as registered methods, as the generated add_*_to_server helpers do: grpc's core then
    # finds the handler itself instead of asking the generic handlers in Python on every call.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]  # grpcio >= 1.63; not in the stubs
