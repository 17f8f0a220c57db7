"""Exports the models of tests/e2e/test_custom_ops.py, run as `python -m tests.e2e.custom_op_exports DIR`.

A process of its own (issue 13): `import tensorflow_text` registers its ops for the life of a process and
Keras / tf_keras set global state, and the test process must keep TensorFlow's own op registry (so that a
server started in it would still fail to load a tensorflow-text model without `--custom_op_modules`).

Writes, each as a base path with version 1:
- `text`: a serving signature tokenizing strings with tensorflow-text's WhitespaceTokenizer (string tokens) and
  FastWordpieceTokenizer (ids, over a vocabulary built here);
- `words`: only the WhitespaceTokenizer (served with `--custom_op_libraries`, tensorflow-text's op library);
- `keras3`: a Keras 3 model written by `model.export(path)`;
- `tf_keras`: a tf_keras (Keras 2) model written by `tf_keras.models.save_model(model, path)`;
- `tf_keras_saved_model`: the same model written by `tf.saved_model.save(model, path)`;
and `expected.json`: the inputs given to each model here and what the in-process model answered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

SENTENCES = ["the quick brown fox", "jumps over the lazy dogs"]
VOCABULARY = ["[UNK]", "the", "quick", "brown", "fox", "jump", "##s", "##ed", "over", "lazy", "dog"]
FEATURES = [[0.1, -0.2, 0.3], [1.0, 2.0, -3.0]]


def export_text(base: Path) -> dict[str, Any]:
    import tensorflow_text as tf_text

    class Tokenizer(tf.Module):  # type: ignore[misc]
        def __init__(self, wordpiece: bool) -> None:
            super().__init__()
            self.whitespace = tf_text.WhitespaceTokenizer()
            self.wordpiece = (
                tf_text.FastWordpieceTokenizer(VOCABULARY, token_out_type=tf.int64, unknown_token="[UNK]")
                if wordpiece
                else None
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])  # type: ignore[untyped-decorator]
        def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            outputs = {"tokens": self.whitespace.tokenize(text).to_tensor(default_value="")}
            if self.wordpiece is not None:
                outputs["ids"] = self.wordpiece.tokenize(text).to_tensor(default_value=-1)
            return outputs

    expected = {}
    for name, wordpiece in (("text", True), ("words", False)):
        module = Tokenizer(wordpiece)
        tf.saved_model.save(module, str(base / name / "1"), signatures={"serving_default": module.serve})
        outputs = module.serve(tf.constant(SENTENCES))
        expected[name] = {key: _jsonable(value.numpy()) for key, value in outputs.items()}
    return expected


def export_keras3(base: Path) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(13)
    features = keras.Input(shape=(3,), name="features")
    hidden = keras.layers.Dense(4, activation="relu")(features)
    probabilities = keras.layers.Dense(2, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(features, probabilities)
    model.export(str(base / "keras3" / "1"), verbose=False)
    return {"output_0": _jsonable(model(np.array(FEATURES, np.float32)))}


def export_tf_keras(base: Path) -> dict[str, Any]:
    import tf_keras

    tf_keras.utils.set_random_seed(13)
    x = tf_keras.Input(shape=(3,), name="x")
    hidden = tf_keras.layers.Dense(4, activation="relu")(x)
    scores = tf_keras.layers.Dense(2, name="scores")(hidden)
    model = tf_keras.Model(x, scores)
    tf_keras.models.save_model(model, str(base / "tf_keras" / "1"))
    tf.saved_model.save(model, str(base / "tf_keras_saved_model" / "1"))
    return {"scores": _jsonable(model(np.array(FEATURES, np.float32)))}


def _jsonable(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == object:
        return [[item.decode() for item in row] for row in array]
    return array.tolist()


def main(argv: list[str]) -> None:
    (directory,) = argv
    base = Path(directory)
    expected = {
        "sentences": SENTENCES,
        "vocabulary": VOCABULARY,
        "features": FEATURES,
        **export_text(base),
        "keras3": export_keras3(base),
        "tf_keras": export_tf_keras(base),
    }
    (base / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(sys.argv[1:])
