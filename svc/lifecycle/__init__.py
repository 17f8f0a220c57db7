"""Lifecycle: aspired versions -> loads/unloads -> serving map (TF core/)."""
