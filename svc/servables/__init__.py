"""Servables: loading and running SavedModels (TF servables/tensorflow/); the TensorFlow boundary."""
