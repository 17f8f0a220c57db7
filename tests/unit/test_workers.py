"""Issue 15: the pieces of `--frontend_workers` that need no processes: the shared-memory ring, arrays in
and out of it, the framed channel, snapshot publication with leases, and the merged Prometheus page."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.protobuf import meta_graph_pb2

from svc.lifecycle.messages import ServableId, ServableStateChanged
from svc.lifecycle.serving_map import ModelEntry, ServingMapHolder
from svc.lifecycle.state_monitor import StateMonitor
from svc.lifecycle.states import State
from svc.servables.saved_model import Servable
from svc.workers.aggregate import merge_expositions
from svc.workers.snapshot import Lease, Mirror, Publisher
from svc.workers.transport import ALIGN, Arena, Channel, create_segment, read_array, write_arrays
from tests.paths import REPO


@pytest.fixture
def arena() -> Iterator[Arena]:
    ring = Arena(create_segment(64 * ALIGN))
    yield ring
    ring.close()


def test_ring_reuses_space_freed_in_any_order(arena: Arena) -> None:
    a, b, c = (arena.alloc_nowait(16 * ALIGN) for _ in range(3))
    assert (a, b, c) == (0, 16 * ALIGN, 32 * ALIGN)
    assert a is not None
    assert b is not None
    assert c is not None
    assert arena.alloc_nowait(32 * ALIGN) is None  # 16 blocks left at the end, none free at the start
    arena.free(b)  # freed out of order: the tail cannot move past `a` yet
    assert arena.alloc_nowait(32 * ALIGN) is None
    arena.free(a)  # now a and b are a free prefix: the ring wraps
    assert arena.alloc_nowait(20 * ALIGN) == 0
    arena.free(c)
    assert arena.in_use == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20 * ALIGN), st.booleans()), max_size=60))
def test_ring_allocations_never_overlap(steps: list[tuple[int, bool]]) -> None:
    ring = Arena(create_segment(64 * ALIGN))
    try:
        live: dict[int, int] = {}
        for size, free_first in steps:
            if free_first and live:
                ring.free(next(iter(live)))
                live.pop(next(iter(live)))
            offset = ring.alloc_nowait(size)
            if offset is None:
                continue
            end = offset + size
            assert end <= ring.size
            assert all(end <= o or offset >= o + s for o, s in live.items())
            live[offset] = size
    finally:
        ring.close()


def test_an_array_larger_than_the_ring_is_refused(arena: Arena) -> None:
    from svc.errors import ServingError

    with pytest.raises(ServingError, match="larger than the worker transport"):
        arena.alloc_nowait(arena.size)


@pytest.mark.anyio
async def test_arrays_cross_unchanged(arena: Arena) -> None:
    arrays: list[np.ndarray[Any, Any]] = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2],  # not contiguous
        np.array([b"a", b"", b"\xff\x00bytes"], dtype=object),
        np.array([["x", "yz"]], dtype=object),
        np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        np.array(0.5, dtype=ml_dtypes.float8_e5m2),  # numpy's string for it, "<f1", names no type
        np.array([(1,), (-2,)], dtype=[("qint8", np.int8)]),  # TF's quantized types are structured
        np.array(True),
        np.zeros((0, 3), np.float64),
    ]
    refs = await write_arrays(arena, arrays)
    for array, ref in zip(arrays, refs, strict=True):
        out = read_array(arena.buf, ref, copy=True)
        assert out.dtype == array.dtype
        assert out.shape == array.shape
        assert out.tolist() == array.tolist()
    for ref in refs:
        arena.free(ref.offset)
    assert arena.in_use == 0


@pytest.mark.anyio
async def test_a_full_ring_waits_for_a_free(arena: Arena) -> None:
    first = arena.alloc_nowait(40 * ALIGN)
    assert first is not None
    got: list[int] = []

    async def second() -> None:
        got.append(await arena.alloc(40 * ALIGN))

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert not got
        arena.free(first)
    assert got == [0]


@pytest.mark.anyio
async def test_channel_frames_messages_and_reports_eof() -> None:
    left, right = socket.socketpair()
    a, b = await Channel.open(left), await Channel.open(right)
    a.send(("run", 1, {"x": None}, [1.0]))
    a.send(("free", list(range(1000))))
    assert await b.receive() == ("run", 1, {"x": None}, [1.0])
    assert await b.receive() == ("free", list(range(1000)))
    a.close()
    assert await b.receive() is None
    b.close()


def _servable(name: str, version: int) -> Servable:
    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    return Servable(name, version, "", None, meta_graph)


@pytest.mark.anyio
async def test_snapshots_lease_what_they_publish() -> None:
    send, recv = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    monitor = StateMonitor(recv)
    holder = ServingMapHolder[Servable]()
    v1, v2 = _servable("m", 1), _servable("m", 2)
    id1, id2 = ServableId("m", 1), ServableId("m", 2)
    holder.replace({"m": ModelEntry({1: v1}, {"stable": 1})})
    monitor.apply(ServableStateChanged(id1, State.AVAILABLE))
    publisher = Publisher(holder, monitor, lambda: ("m",))
    lease = Lease()
    mirror = Mirror()

    assert mirror.apply(publisher.message(lease, ready=True, draining=False)) == []
    assert holder.leases.held(id1) == 1  # the frontend's lease
    request = mirror.serving_map.acquire("m", label="stable")  # a request in the frontend
    proxy = request.servable
    assert (proxy.name, proxy.version) == ("m", 1)
    assert "serving_default" in proxy.signatures
    assert mirror.monitor.versions("m")[1].state is State.AVAILABLE
    assert mirror.owner_ready
    assert mirror.configured == ("m",)

    holder.replace({"m": ModelEntry({2: v2}, {})})  # v1 leaves the map; the owner must keep it for now
    dropped = mirror.apply(publisher.message(lease, ready=True, draining=False))
    assert [(p.version, mirror.serving_map.leases.held(ServableId(p.name, p.version))) for p in dropped] == [(1, 1)]
    assert mirror.serving_map.current.resolve("m").version == 2
    unloaded = anyio.Event()

    async def unload() -> None:  # what the loader pool does before closing a version
        await holder.leases.wait_released(id1)
        unloaded.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(unload)
        await anyio.wait_all_tasks_blocked()
        assert not unloaded.is_set()  # a frontend request still holds the proxy, so the lease stays
        request.release()
        await mirror.serving_map.leases.wait_released(id1)
        lease.release(dropped[0].token)  # the frontend's "released"
    assert unloaded.is_set()
    assert holder.leases.held(id2) == 1
    lease.release_all()
    assert holder.leases.held(id2) == 0
    send.close()
    recv.close()


def test_merged_page_sums_series_of_every_process() -> None:
    owner = (
        b"# TYPE :tensorflow:serving:request_count counter\n"
        b"# HELP aspired_batch_size Rows.\n# TYPE aspired_batch_size histogram\n"
        b'aspired_batch_size_bucket{le="1.0"} 3.0\naspired_batch_size_count 3.0\n'
        b"aspired_batch_size_created 100.5\n"
    )
    frontend = (
        b"# TYPE :tensorflow:serving:request_count counter\n"
        b':tensorflow:serving:request_count{model_name="m",status="OK"} 2\n'
        b"# HELP aspired_batch_size Rows.\n# TYPE aspired_batch_size histogram\n"
        b"aspired_batch_size_created 99.5\n"
    )
    other = b':tensorflow:serving:request_count{model_name="m",status="OK"} 5\n'
    floats = b'aspired_requests_total{code="OK"} 2.0\n'
    assert merge_expositions([floats, floats]) == b'aspired_requests_total{code="OK"} 4.0\n'
    assert merge_expositions([owner, frontend, frontend.replace(b"} 2", b"} 5")]).decode().splitlines() == [
        "# TYPE :tensorflow:serving:request_count counter",
        ':tensorflow:serving:request_count{model_name="m",status="OK"} 7',
        "# HELP aspired_batch_size Rows.",
        "# TYPE aspired_batch_size histogram",
        'aspired_batch_size_bucket{le="1.0"} 3.0',
        "aspired_batch_size_count 3.0",
        "aspired_batch_size_created 99.5",
    ]
    assert b"} 5" in merge_expositions([other])


def test_frontend_worker_imports_no_tensorflow_runtime() -> None:
    """A frontend process imports the protocol stacks and TF Serving's messages, never TensorFlow itself."""
    code = (
        "from svc.workers import protos_only\n"
        "protos_only.install()\n"
        "import svc.workers.frontend, svc.workers.frontend_main, svc.inference.classify_regress\n"
        "import sys\n"
        "assert not protos_only.runtime_loaded(), sorted(m for m in sys.modules if m.startswith('tensorflow'))\n"
        "assert not hasattr(sys.modules['tensorflow'], '__version__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO, timeout=120)
