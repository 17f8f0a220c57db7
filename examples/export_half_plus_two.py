"""Export TF Serving's half_plus_two test model: y = 0.5 * x + 2, as a TF1 SavedModel.

Mirrors `tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py` (the generator of
`saved_model_half_plus_two_cpu`): the same graph (reference variables a, b, c, a2, c2; a `tf_example`
placeholder parsed for features `x` and `x2`), the same asset `foo.txt`, the same main op and the same five
SignatureDefs, so GetModelMetadata answers what TF Serving answers for its own test model:

    serving_default   tensorflow/serving/predict   x: x:0 float (-1, 1)        -> y: y:0
    classify_x_to_y   tensorflow/serving/classify  inputs: tf_example:0 string -> scores: y:0
    regress_x_to_y    tensorflow/serving/regress   inputs: tf_example:0 string -> outputs: y:0
    regress_x_to_y2   tensorflow/serving/regress   inputs: tf_example:0 string -> outputs: y2:0 (0.5 x + 3)
    regress_x2_to_y3  tensorflow/serving/regress   inputs: x2:0 float (-1, 1)  -> outputs: y3:0 (0.5 x2 + 3)

The version directory appears atomically: the model is written to a hidden staging directory beside
`DIR/N` and renamed into place, so a server polling DIR never sees a half-written version.

    python examples/export_half_plus_two.py --output_dir=examples/models/half_plus_two --model_version=1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from publish import publish_version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # after the log level is set

tf.get_logger().setLevel("ERROR")  # the v1 builder API logs a deprecation notice per call

v1 = tf.compat.v1
ASSET_NAME = "foo.txt"
ASSET_CONTENTS = "asset-file-contents"


def _variable(value: float, name: str) -> tf.Variable:
    # use_resource=False: VariableV2 reference variables, as in the TF 1.14 export TF Serving ships.
    return v1.Variable(value, name=name, use_resource=False)


def _parse_x_and_x2(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Parse features `x` (required) and `x2` (default 0.0), both float [1], from tf.Examples.

    The V1 `ParseExample` op, as `tf.parse_example` emitted in TF 1.x: its shape function makes `x` and `x2`
    (-1, 1) although `tf_example` has unknown rank, so the SignatureDefs declare the same shapes as TF
    Serving's export (TF 2's ParseExampleV2 would leave them of unknown rank).
    """
    with tf.name_scope("ParseExample"), tf.device("cpu:0"):  # parsing runs on CPU only
        default_x = tf.constant([], dtype=tf.float32)
        default_x2 = tf.reshape(tf.constant([0.0], name="key_x2"), [1])
        x, x2 = tf.raw_ops.ParseExample(
            serialized=serialized,
            names=tf.constant([], dtype=tf.string),
            sparse_keys=[],
            dense_keys=[tf.constant("x"), tf.constant("x2")],
            dense_defaults=[default_x, default_x2],
            sparse_types=[],
            dense_shapes=[[1], [1]],
        ).dense_values
    return tf.identity(x, name="x"), tf.identity(x2, name="x2")


def _affine(scale: tf.Variable, x: tf.Tensor, offset: tf.Variable, name: str) -> tf.Tensor:
    """`name` = scale * x + offset, with the V1 Mul and Add ops of the original graph."""
    return tf.identity(tf.raw_ops.Add(x=tf.raw_ops.Mul(x=scale, y=x), y=offset), name=name)


def _regression_signature(input_tensor: tf.Tensor, output_tensor: tf.Tensor) -> object:
    return v1.saved_model.signature_def_utils.build_signature_def(
        inputs={"inputs": v1.saved_model.utils.build_tensor_info(input_tensor)},
        outputs={"outputs": v1.saved_model.utils.build_tensor_info(output_tensor)},
        method_name=v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
    )


def _classification_signature(input_tensor: tf.Tensor, scores_tensor: tf.Tensor) -> object:
    return v1.saved_model.signature_def_utils.build_signature_def(
        inputs={"inputs": v1.saved_model.utils.build_tensor_info(input_tensor)},
        outputs={"scores": v1.saved_model.utils.build_tensor_info(scores_tensor)},
        method_name=v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
    )


def _predict_signature(x: tf.Tensor, y: tf.Tensor) -> object:
    return v1.saved_model.signature_def_utils.build_signature_def(
        inputs={"x": v1.saved_model.utils.build_tensor_info(x)},
        outputs={"y": v1.saved_model.utils.build_tensor_info(y)},
        method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
    )


def export(export_dir: Path, scratch: Path) -> None:
    """Write the SavedModel to `export_dir`, which must not exist; `scratch` holds the asset source."""
    with tf.Graph().as_default(), v1.Session() as sess:
        a = _variable(0.5, "a")
        b = _variable(2.0, "b")
        c = _variable(3.0, "c")

        serialized_tf_example = v1.placeholder(tf.string, name="tf_example")
        x, x2 = _parse_x_and_x2(serialized_tf_example)
        y = _affine(a, x, b, "y")
        y2 = _affine(a, x, c, "y2")
        a2 = _variable(0.5, "a2")
        c2 = _variable(3.0, "c2")
        y3 = _affine(a2, x2, c2, "y3")

        # An asset, copied into the export and restored through a string variable by the main op.
        asset_path = scratch / ASSET_NAME
        asset_path.write_text(ASSET_CONTENTS)
        asset_tensor = tf.constant(str(asset_path))
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_tensor)
        filename_tensor = v1.Variable(
            ASSET_NAME, name="filename_tensor", trainable=False, collections=[], use_resource=False
        )
        assign_filename_op = filename_tensor.assign(ASSET_NAME)

        signature_def_map = {
            "regress_x_to_y": _regression_signature(serialized_tf_example, y),
            "regress_x_to_y2": _regression_signature(serialized_tf_example, y2),
            "regress_x2_to_y3": _regression_signature(x2, y3),
            "classify_x_to_y": _classification_signature(serialized_tf_example, y),
            v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _predict_signature(x, y),
        }

        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signature_def_map,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename_op),
        )
        builder.save()


def export_version(output_dir: Path, version: int) -> Path:
    """Export into `output_dir/version` atomically (examples/publish.py)."""
    return publish_version(output_dir, version, lambda directory: export(directory, directory.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, type=Path, help="model base path")
    parser.add_argument("--model_version", required=True, type=int, help="version directory name")
    args = parser.parse_args()
    if args.model_version < 0:
        parser.error("--model_version must be a non-negative integer")
    print(export_version(args.output_dir, args.model_version))


if __name__ == "__main__":
    main()
