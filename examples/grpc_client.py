"""Send one Predict to a TF Serving compatible server over gRPC and print the outputs.

Like TF Serving's example clients (mnist_client.py, resnet_client_grpc.py): the official
`tensorflow_serving.apis` stub over grpcio, nothing of this project's own code. For half_plus_two the
request is x = [[1.0], [2.0], [5.0]] and the answer y = [[2.5], [3.0], [4.5]].

    python examples/grpc_client.py --server=localhost:8500 --model=half_plus_two
"""

from __future__ import annotations

import argparse

import grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def float_tensor(rows: list[float]) -> tensor_pb2.TensorProto:
    """A float32 [len(rows), 1] TensorProto (what tf.make_tensor_proto builds, without importing TF)."""
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=len(rows)),
            tensor_shape_pb2.TensorShapeProto.Dim(size=1),
        ]
    )
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="localhost:8500", help="host:port of the gRPC endpoint")
    parser.add_argument("--model", default="half_plus_two", help="model name")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--input", default="x", help="input alias of the signature")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    args = parser.parse_args()

    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    request.model_spec.signature_name = args.signature_name
    request.inputs[args.input].CopyFrom(float_tensor([1.0, 2.0, 5.0]))

    with grpc.insecure_channel(args.server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=args.timeout)
    print(response)


if __name__ == "__main__":
    main()
