"""Train a softmax-regression digit classifier and export it as a SavedModel version, like TF Serving's
`mnist_saved_model.py` tutorial, on data that is available offline (scikit-learn's 8x8 digits).

    python examples/mnist_saved_model.py --training_iteration=100 --model_version=1 /tmp/mnist

Signatures: `predict_images` (images float [-1,64] -> scores float [-1,10]) and `serving_default`
(classification: serialized tf.Example with feature `x` -> classes, scores). The version directory is
written next to its final name and renamed into place, so a polling server never sees it half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import tensorflow as tf
from digits import IMAGE_PIXELS, NUM_CLASSES, split
from publish import publish_version


def export(export_base: str, version: int, iterations: int) -> str:
    v1 = tf.compat.v1
    train_x, train_y, _, _ = split()
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.io.parse_example(
            serialized, {"x": v1.FixedLenFeature(shape=[IMAGE_PIXELS], dtype=tf.float32)}
        )
        x = tf.identity(features["x"], name="x")
        y_ = v1.placeholder(tf.int64, shape=[None])
        w = v1.Variable(tf.zeros([IMAGE_PIXELS, NUM_CLASSES]))
        b = v1.Variable(tf.zeros([NUM_CLASSES]))
        logits = tf.matmul(x, w) + b
        y = tf.nn.softmax(logits, name="y")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_, logits=logits))
        train = v1.train.GradientDescentOptimizer(0.5).minimize(loss)
        values, indices = tf.nn.top_k(y, NUM_CLASSES)
        class_names = tf.constant([str(i) for i in range(NUM_CLASSES)])
        classes = tf.gather(class_names, indices)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            rng = np.random.default_rng(version)
            for _ in range(iterations):
                batch = rng.choice(len(train_x), 50, replace=False)
                session.run(train, feed_dict={x: train_x[batch], y_: train_y[batch]})
            info = v1.saved_model.utils.build_tensor_info
            classify = v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"inputs": info(serialized)},
                outputs={"classes": info(classes), "scores": info(values)},
                method_name="tensorflow/serving/classify",
            )
            predict = v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"images": info(x)}, outputs={"scores": info(y)},
                method_name="tensorflow/serving/predict",
            )
            def save(directory: Path) -> None:
                builder = v1.saved_model.Builder(str(directory))
                builder.add_meta_graph_and_variables(
                    session, [v1.saved_model.tag_constants.SERVING],
                    signature_def_map={"predict_images": predict, "serving_default": classify},
                    main_op=v1.tables_initializer(), strip_default_attrs=True,
                )
                builder.save()

            final = publish_version(Path(export_base), version, save)
    return str(final)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training_iteration", type=int, default=1000)
    parser.add_argument("--model_version", type=int, default=1)
    parser.add_argument("export_dir")
    args = parser.parse_args()
    print("exported", export(args.export_dir, args.model_version, args.training_iteration))


if __name__ == "__main__":
    main()
