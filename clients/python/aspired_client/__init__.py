"""aspired-client: a TensorFlow Serving client without TensorFlow (numpy in, numpy out; gRPC and REST).

    from aspired_client import Client
    with Client("localhost:8500") as client:            # or Client("http://localhost:8501")
        outputs = client.predict("half_plus_two", {"x": np.array([[1.0], [2.0]], np.float32)})

It speaks only TF Serving's public API, so it works against `tensorflow_model_server` as well as aspired.
Its protobuf messages are a private copy (full names under `aspired_client._pb.`), so it can be imported
in the same process as tensorflow and tensorflow-serving-api.
"""

from aspired_client.client import AsyncClient, Client
from aspired_client.errors import Code, ServingError
from aspired_client.tensors import TensorError, make_ndarray, make_tensor_proto
from aspired_client.types import ModelMetadata, Signature, TensorSpec, VersionStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Code",
    "ModelMetadata",
    "ServingError",
    "Signature",
    "TensorError",
    "TensorSpec",
    "VersionStatus",
    "make_ndarray",
    "make_tensor_proto",
]
