"""Export a 784-H-10 MLP classifier as a TF1 SavedModel, for benchmarks (an MNIST-sized model, untrained).

Weights are random with a fixed seed (He-normal, biases 0.01), so every export computes the same function.
One signature, `serving_default` (tensorflow/serving/predict):

    images: images:0 float (-1, 784)  ->  scores: scores:0 float (-1, 10)   softmax
                                          classes: classes:0 int64 (-1)     argmax of scores

Written atomically, like export_half_plus_two.py: staged beside `DIR/N`, then renamed into place.

    python examples/export_mlp.py --output_dir=examples/models/mlp --model_version=1 [--hidden=512]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from publish import publish_version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # after the log level is set

tf.get_logger().setLevel("ERROR")  # the v1 builder API logs a deprecation notice per call

v1 = tf.compat.v1
INPUTS = 784
CLASSES = 10
SEED = 20240601


def _layer(x: tf.Tensor, fan_in: int, fan_out: int, rng: np.random.Generator, name: str) -> tf.Tensor:
    weights = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
    w = v1.Variable(weights, name=f"{name}/weights")
    b = v1.Variable(np.full([fan_out], 0.01, dtype=np.float32), name=f"{name}/biases")
    return tf.matmul(x, w) + b


def export(export_dir: Path, hidden: int) -> None:
    """Write the SavedModel to `export_dir`, which must not exist."""
    rng = np.random.default_rng(SEED)
    with tf.Graph().as_default(), v1.Session() as sess:
        images = v1.placeholder(tf.float32, shape=[None, INPUTS], name="images")
        h = tf.nn.relu(_layer(images, INPUTS, hidden, rng, "hidden"))
        scores = tf.nn.softmax(_layer(h, hidden, CLASSES, rng, "output"), name="scores")
        classes = tf.argmax(scores, axis=1, name="classes")

        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"images": v1.saved_model.utils.build_tensor_info(images)},
            outputs={
                "scores": v1.saved_model.utils.build_tensor_info(scores),
                "classes": v1.saved_model.utils.build_tensor_info(classes),
            },
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature
            },
        )
        builder.save()


def export_version(output_dir: Path, version: int, hidden: int) -> Path:
    """Export into `output_dir/version` atomically (examples/publish.py)."""
    return publish_version(output_dir, version, lambda directory: export(directory, hidden))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, type=Path, help="model base path")
    parser.add_argument("--model_version", required=True, type=int, help="version directory name")
    parser.add_argument("--hidden", type=int, default=512, help="hidden layer width (default 512)")
    args = parser.parse_args()
    if args.model_version < 0 or args.hidden < 1:
        parser.error("--model_version must be >= 0 and --hidden >= 1")
    print(export_version(args.output_dir, args.model_version, args.hidden))


if __name__ == "__main__":
    main()
