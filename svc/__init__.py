"""aspired: a TensorFlow Serving compatible model server on asyncio."""

__version__ = "0.1.0"
