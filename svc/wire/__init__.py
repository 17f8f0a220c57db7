"""Wire: pure codecs between protocol bytes and numpy (TensorProto, TF Serving's JSON)."""
