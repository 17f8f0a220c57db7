"""The two extra SavedModels of bench/peers_bench.py, as TF1 SavedModels (one `serving_default` each):

- `image`: y = 0.5 x + 2 on a [-1, 224, 224, 3] float32 `images` input (half_plus_two's arithmetic with an
  image-shaped signature, so every server, whatever its shape checks, takes the 224x224x3 image);
- `recommender`: 20 feature tensors of one column each (`cat00`..`cat09` int64 ids, hashed into 8-wide
  embeddings of a 1000-row table; `num00`..`num09` float32), concatenated, a 90-32 ReLU layer and a
  sigmoid `score` [-1, 1]: a recommender-style request of many small inputs.

    python bench/peers/export_models.py OUT_DIR    (writes OUT_DIR/image/1 and OUT_DIR/recommender/1)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # after the log level is set

tf.get_logger().setLevel("ERROR")
v1 = tf.compat.v1
FEATURES = 10  # of each kind: 10 categorical + 10 numeric = 20 inputs


def image_graph() -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    images = v1.placeholder(tf.float32, shape=[None, 224, 224, 3], name="images")
    return {"images": images}, {"y": tf.identity(0.5 * images + 2.0, name="y")}


def recommender_graph() -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    rng = np.random.default_rng(11)
    table = v1.Variable(rng.normal(0, 0.1, (1000, 8)).astype(np.float32), name="embeddings")
    inputs: dict[str, tf.Tensor] = {}
    columns = []
    for i in range(FEATURES):
        ids = v1.placeholder(tf.int64, shape=[None, 1], name=f"cat{i:02d}")
        inputs[f"cat{i:02d}"] = ids
        columns.append(tf.gather(table, tf.math.floormod(ids[:, 0] * 31 + i, 1000)))
    for i in range(FEATURES):
        value = v1.placeholder(tf.float32, shape=[None, 1], name=f"num{i:02d}")
        inputs[f"num{i:02d}"] = value
        columns.append(value)
    x = tf.concat(columns, axis=1)  # [-1, 90]
    w1 = v1.Variable(rng.normal(0, 0.15, (90, 32)).astype(np.float32), name="w1")
    w2 = v1.Variable(rng.normal(0, 0.15, (32, 1)).astype(np.float32), name="w2")
    score = tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2), name="score")
    return inputs, {"score": score}


def export(target: Path, build: Callable[[], tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]]) -> None:
    if (target / "saved_model.pb").exists():
        return
    staging = target.parent / f".{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    with tf.Graph().as_default(), v1.Session() as sess:
        inputs, outputs = build()
        info = v1.saved_model.utils.build_tensor_info
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={k: info(v) for k, v in inputs.items()},
            outputs={k: info(v) for k, v in outputs.items()},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(staging))
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.tag_constants.SERVING], signature_def_map={"serving_default": signature}
        )
        builder.save()
    staging.rename(target)


def main() -> None:
    out = Path(sys.argv[1])
    for name, build in (("image", image_graph), ("recommender", recommender_graph)):
        (out / name).mkdir(parents=True, exist_ok=True)
        export(out / name / "1", build)


if __name__ == "__main__":
    main()
