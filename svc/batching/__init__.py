"""Batching: per-version queues, shared inference threads, tensor merge/split/pad (TF batching/)."""
