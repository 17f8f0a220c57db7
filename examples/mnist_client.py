"""Send the held-out digits to a server over gRPC (the official client) and report the error rate, like
TF Serving's `mnist_client.py`.

    python examples/mnist_client.py --num_tests=1000 --server=localhost:8500 --concurrency=10
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc
import numpy as np
import tensorflow as tf
from digits import split
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def run(server: str, model: str, num_tests: int, concurrency: int) -> dict[str, float]:
    _, _, images, labels = split()
    tally: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    lock = threading.Lock()
    semaphore = threading.Semaphore(concurrency)
    done = threading.Event()
    remaining = [num_tests]

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def finished(future: grpc.Future, label: int) -> None:
            with lock:
                try:
                    response = future.result()
                    predicted = int(np.argmax(tf.make_ndarray(response.outputs["scores"])[0]))
                    tally["ok"] += 1
                    tally["error"] += int(predicted != label)
                    versions[response.model_spec.version.value] += 1
                except grpc.RpcError:
                    tally["failed"] += 1
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()
            semaphore.release()

        for i in range(num_tests):
            semaphore.acquire()
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = "predict_images"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[i % len(images)][None, :]))
            future = stub.Predict.future(request, 10.0)
            label = int(labels[i % len(labels)])
            future.add_done_callback(lambda f, label=label: finished(f, label))
        done.wait(300)
    answered = max(tally["ok"], 1)
    return {
        "error_rate": tally["error"] / answered,
        "failed": float(tally["failed"]),
        "answered": float(tally["ok"]),
        **{f"version_{v}": float(n) for v, n in versions.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_tests", type=int, default=100)
    parser.add_argument("--server", default="localhost:8500")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--model", default="mnist")
    args = parser.parse_args()
    result = run(args.server, args.model, args.num_tests, args.concurrency)
    print(f"Inference error rate: {result['error_rate'] * 100:.1f}%")
    print({k: v for k, v in result.items() if k != "error_rate"})


if __name__ == "__main__":
    main()
