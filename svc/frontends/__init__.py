"""Frontends: the gRPC and REST protocol stacks around the inference path."""
