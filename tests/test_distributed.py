"""Several processes: `fit` over a mesh that spans 2 processes, as on 2 hosts.

Two copies of `distributed_child.py` meet through `jax.distributed` on 127.0.0.1,
one CPU device each, and train over the global mesh (gloo carries the
all-reduces). Once both have run their checks, the test kills one with SIGKILL
and times how long the other takes to fail.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import child_xla_flags

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
READY_S = 240  # both processes through their checks (mostly compiling, on 2 shared cores)
DEAD_S = 60  # the survivor must exit within this long of the other's death


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Start both processes, wait for their results, kill process 1, watch process 0."""
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, XLA_FLAGS=child_xla_flags())  # one device per process
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(HERE), PYTHONUNBUFFERED="1")
    port, children = free_port(), []
    start = time.monotonic()
    with contextlib.ExitStack() as logs:
        logs.callback(stop, children)  # run last, whatever happens
        for i in range(2):
            log_file = logs.enter_context(open(out / f"log_{i}.txt", "w"))
            children.append(
                subprocess.Popen(
                    [sys.executable, os.path.join(HERE, "distributed_child.py"), str(i), str(port), str(out)],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )

        def log(i):
            return (out / f"log_{i}.txt").read_text()

        while not all("looping" in log(i) for i in range(2)):
            failed = [i for i, child in enumerate(children) if child.poll() is not None]
            assert not failed and time.monotonic() - start < READY_S, "\n\n".join(
                f"process {i} (exit {child.poll()}):\n{log(i)[-5000:]}" for i, child in enumerate(children)
            )
            time.sleep(0.2)
        ready_s = time.monotonic() - start
        children[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = children[0].wait(timeout=DEAD_S)
        except subprocess.TimeoutExpired:
            code = None  # hung: the test below says so
        results = [json.loads((out / f"result_{i}.json").read_text()) for i in range(2)]
        yield {
            "out": out,
            "results": results,
            "ready_s": ready_s,
            "survivor_code": code,
            "survivor_s": time.monotonic() - killed,
            "survivor_log": log(0),
        }


def load(path):
    with np.load(path) as arrays:
        return dict(arrays)


def stop(children):
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_two_processes_train_like_one(run):
    first, second = load(run["out"] / "params_0.npz"), load(run["out"] / "params_1.npz")
    for batch_size in (None, 16):
        names = sorted(k for k in first if k.startswith(f"alone_{batch_size}_"))
        assert len(names) == 5  # 4 params and the losses
        for name in names:  # each device's half of the batch, averaged: float rounding apart
            np.testing.assert_allclose(
                first[name.replace("alone", "mesh")], first[name], rtol=2e-5, atol=1e-6, err_msg=name
            )
    assert sorted(second) == sorted(k for k in first if k.startswith("mesh"))
    for name in second:  # both processes hold the same result
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def assert_same_as_the_mesh_run(run, name):
    """Each process's `{name}_{i}.npz` holds the params and losses of the mesh run with
    minibatches of 16, bitwise."""
    uninterrupted = load(run["out"] / "params_0.npz")
    for i in range(2):
        resumed = load(run["out"] / f"{name}_{i}.npz")
        for j in range(4):
            np.testing.assert_array_equal(resumed[f"arr_{j}"], uninterrupted[f"mesh_16_{j}"])
        np.testing.assert_array_equal(resumed["losses"], uninterrupted["mesh_16_losses"])


def test_resume_with_two_processes_equals_the_uninterrupted_run(run):
    assert_same_as_the_mesh_run(run, "resumed")
    assert run["results"][0]["saves"] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_run_on_global_data_resumes_as_the_run_on_every_process_data(run):
    """x and y made with jax.make_array_from_process_local_data, each process holding
    half the samples: checkpointed, resumed, the same as the run on full copies."""
    assert_same_as_the_mesh_run(run, "global")


def test_only_process_0_writes_the_checkpoint(run):
    assert run["results"][0]["saves"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert run["results"][1]["saves"] == []


def test_processes_must_pass_the_same_data(run):
    for i in range(2):
        assert run["results"][i]["other_data"] == (
            "fit: data-parallel training: every process must pass the same y, but they differ between "
            "processes (each device would take its own process's copy); load or draw them "
            "identically everywhere"
        )


def test_a_killed_process_stops_the_other_with_an_error(run):
    assert run["survivor_code"] is not None, (
        f"process 0 still running {DEAD_S} s after process 1 was killed:\n{run['survivor_log'][-5000:]}"
    )
    assert run["survivor_code"] != 0
    assert run["survivor_s"] < DEAD_S
    # gloo's broken connection, or the coordination service's missed heartbeats
    assert any(
        sign in run["survivor_log"]
        for sign in (
            "Connection reset by peer",
            "Connection closed by peer",
            "heartbeat timeout",
            "another task died",
        )
    ), run["survivor_log"][-5000:]
