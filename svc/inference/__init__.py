"""Inference: one prepare -> run -> finish path per API (TF Serving's *_impl.cc, *_util.cc)."""
