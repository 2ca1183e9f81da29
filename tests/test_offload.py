"""The helper process of offload.py: the same numbers as in this process, and torch never loaded there."""

import json
import os
import subprocess
import sys

import numpy as np
import ot
import pytest

from divgen import estimators, offload


@pytest.fixture
def helper():
    offload.start()
    yield offload
    offload.stop()


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(300, 2)).astype(np.float32), (rng.normal(size=(200, 2)) + [0.5, 0.0]).astype(np.float32)


def test_the_helper_gives_the_numbers_of_this_process_and_never_loads_torch(helper):
    real, fake = _pair()
    cost = np.linalg.norm(real[:, None].astype(np.float64) - fake[None], axis=-1)
    there = helper.run("prdc", real, fake, 3), helper.run("transport_duals", cost)
    modules = helper.run("loaded_modules")  # run here (after a failure) it would list torch: pytest loaded it
    assert "torch" not in modules and "prdc" in modules and "ot" in modules
    assert there[0] == offload.prdc(real, fake, 3)
    assert np.array_equal(there[1], offload.transport_duals(cost))
    # optimal duals: with u the c-transform of v (u_i = min_j c_ij − v_j), mean(u) + mean(v) is the samples' W1
    u = (cost - there[1][None]).min(1)
    assert abs(u.mean() + there[1].mean() - ot.emd2(np.full(300, 1 / 300), np.full(200, 1 / 200), cost)) < 1e-9


def test_a_helper_that_died_or_failed_is_replaced_by_this_process(helper):
    real, fake = _pair(1)
    cost = np.linalg.norm(real[:, None].astype(np.float64) - fake[None], axis=-1)
    helper._helper.process.kill()
    helper._helper.process.wait()
    assert np.array_equal(helper.run("transport_duals", cost), offload.transport_duals(cost))
    assert helper._helper is None
    helper.start()
    with pytest.raises(ValueError):  # the job's own error, raised here
        helper.run("transport_duals", cost[0])
    assert helper._helper is None


def test_estimate_of_wasserstein_in_a_fresh_process_with_its_helper_agrees_with_this_one(tmp_path):
    real, fake = _pair(2)
    np.save(tmp_path / "a.npy", real)
    np.save(tmp_path / "b.npy", fake)
    proc = subprocess.run([sys.executable, "-m", "divgen", "estimate", "a.npy", "b.npy", "--divergence", "wasserstein",
                           "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    here = estimators.estimate(real, fake, "wasserstein").to_dict()
    assert json.loads(proc.stdout) == here


def test_a_message_carries_arrays_and_numbers_exactly_and_no_objects():
    import io
    import math

    value = ["job", [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((0, 2)), np.array(7, dtype=np.int64), 3,
                     {"a": 0.1 + 0.2, "b": math.inf, "c": math.nan}, None, "ünïcode"]]
    stream = io.BytesIO()
    offload._send(stream, value)
    stream.seek(0)
    got = offload._receive(stream)
    assert got[0] == "job" and got[1][3] == 3 and got[1][5] is None and got[1][6] == "ünïcode"
    for sent, came in zip(value[1][:3], got[1][:3]):
        assert came.dtype == sent.dtype and came.shape == sent.shape and np.array_equal(came, sent)
    d = got[1][4]
    assert d["a"] == 0.1 + 0.2 and d["b"] == math.inf and math.isnan(d["c"])
    with pytest.raises(EOFError):  # a message cut short
        offload._receive(io.BytesIO(stream.getvalue()[:-8]))
    with pytest.raises(TypeError):
        offload._send(io.BytesIO(), [np.array([object()])])


def test_a_helper_that_never_gets_ready_is_stopped_and_this_process_runs_the_job(monkeypatch):
    """A helper stuck before its first message (an import that hangs): the first request waits READY_SECONDS,
    kills it and runs the job here."""
    monkeypatch.setattr(offload, "READY_SECONDS", 0.5)
    stuck = offload._Helper([sys.executable, "-c", "import time; time.sleep(120)"])
    monkeypatch.setattr(offload, "_helper", stuck)
    real, fake = _pair(3)
    assert offload.run("prdc", real, fake, 3) == offload.prdc(real, fake, 3)
    assert offload._helper is None and stuck.process.poll() is not None  # killed
