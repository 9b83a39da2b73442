"""The gRPC service: servicers, configuration and start-up."""
