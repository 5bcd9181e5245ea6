"""gRPC transport: servicers, request decoding and the one error-to-status boundary."""
