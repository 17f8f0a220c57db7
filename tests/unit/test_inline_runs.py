"""Short runs of loop-free graphs run in the calling thread (issue 11: TF's hand-off to its inter-op pool cost
more CPU than a small model's whole run); graphs that may loop or wait keep the pool, where the request's
deadline (`RunOptions.timeout_in_ms`) can end a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from svc.errors import Code, ServingError
from svc.servables import saved_model
from tests.e2e.test_deadlines import export_slow_model

HALF_PLUS_TWO = (Path(__file__).parents[2] / ".." / "shared" / "tfserving-testdata" / "saved_model_half_plus_two_cpu"
                 / "00000123")


def _graph(build: object) -> object:
    graph = tf.Graph()
    with graph.as_default():
        build()  # type: ignore[operator]
    return graph.as_graph_def()


def test_loop_free_graphs_may_run_inline() -> None:
    def arithmetic() -> None:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.identity(x * 2.0 + 1.0, name="y")

    def loop() -> None:
        n = tf.compat.v1.placeholder(tf.int64, [], name="n")
        tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)])

    def queue() -> None:
        q = tf.queue.FIFOQueue(2, tf.float32)
        q.dequeue(name="y")

    def loop_in_a_function() -> None:
        @tf.function  # type: ignore[untyped-decorator]
        def count(n: tf.Tensor) -> tf.Tensor:
            return tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)])[0]

        count(tf.compat.v1.placeholder(tf.int64, [], name="n"))

    assert saved_model.may_run_inline(_graph(arithmetic))
    assert not saved_model.may_run_inline(_graph(loop))
    assert not saved_model.may_run_inline(_graph(queue))
    assert not saved_model.may_run_inline(_graph(loop_in_a_function))


def test_a_short_loop_free_run_is_inline_and_answers_the_same() -> None:
    servable = saved_model.load("half_plus_two", 123, str(HALF_PLUS_TWO), ["serve"])
    try:
        assert servable._runs_inline
        x = np.array([[1.0], [2.0], [5.0]], np.float32)
        for _ in range(5):
            [y] = servable.run({"x:0": x}, ["y:0"], timeout_ms=10_000)
            assert y.tolist() == [[2.5], [3.0], [4.5]]
        [inline] = servable._inline.values()
        assert inline.runs == 5
        assert not servable._callables  # no pooled callable was needed
    finally:
        servable.close()


def test_a_callable_whose_runs_are_long_moves_to_the_pool() -> None:
    servable = saved_model.load("half_plus_two", 123, str(HALF_PLUS_TWO), ["serve"])
    try:
        x = np.array([[1.0]], np.float32)
        servable.run({"x:0": x}, ["y:0"])
        [inline] = servable._inline.values()
        inline.mean = 1.0  # as after runs of a second each
        [y] = servable.run({"x:0": x}, ["y:0"])
        assert y.tolist() == [[2.5]]
        assert inline.runs == 1  # not run inline again
        assert len(servable._callables) == 1
    finally:
        servable.close()


def test_a_looping_graph_keeps_the_pool_and_its_timeout(tmp_path: Path) -> None:
    export_slow_model(tmp_path / "1")
    servable = saved_model.load("slow", 1, str(tmp_path / "1"), ["serve"])
    try:
        assert not servable._runs_inline
        [y] = servable.run({"n:0": np.array([10], np.int64)}, ["y:0"], timeout_ms=5_000)
        assert y.tolist() == [10.0]
        with pytest.raises(ServingError) as caught:
            servable.run({"n:0": np.array([10**12], np.int64)}, ["y:0"], timeout_ms=200)
        assert caught.value.code is Code.DEADLINE_EXCEEDED
    finally:
        servable.close()
