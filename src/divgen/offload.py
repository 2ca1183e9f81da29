"""The library calls that need only NumPy (prdc, POT's transport solver), and a helper process to run them.

Importing prdc and POT imports scikit-learn and SciPy's statistics, about 2 s of
one core that holds the interpreter lock, so on 2 cores it delays every other
job of `divgen evaluate` as much. A command line that will need them starts
the helper (start) before it imports torch: a second Python process, which
never imports torch, loads them on the other core while torch loads here. run
then sends the arrays and gets the answer back. Without a helper (a Python
caller, or one that had torch loaded already, where nothing would overlap) run
calls the same function here. The numbers are the same either way: the same
function of the same arrays.

This module imports only the standard library (the jobs import their own), so
that the helper stays light and `divgen --help` fast; run as a script, it
serves requests on its stdin and stdout.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

POT_WITHOUT_TORCH = {"POT_BACKEND_DISABLE_PYTORCH": "1"}  # POT imports torch as a backend unless told not to
# Seconds the first request waits for the helper to say that its imports are done (about 2 s on an idle core);
# a helper that takes longer is stopped, and the jobs run in this process
READY_SECONDS = 60.0
READY = "ready"


# ------------------------------------------------------------------ jobs ---
def prdc(real, fake, k: int) -> dict:
    """The authors' `prdc` package's precision, recall, density and coverage of (N, d) and (M, d) arrays, by
    name (its progress print silenced)."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):
        out = compute_prdc(real, fake, nearest_k=k)
    return {name: float(value) for name, value in out.items()}


def transport_duals(cost):
    """Dual variables v (on the columns), float64, of the optimal transport between uniform weights on the
    rows and on the columns of the (N, M) array `cost`, by POT's network simplex (critics.transport_potential)."""
    import numpy as np
    import ot

    n, m = cost.shape
    _, log = ot.emd(np.full(n, 1 / n), np.full(m, 1 / m), cost, numItermax=10_000_000, log=True)
    return np.asarray(log["v"], dtype=np.float64)


def loaded_modules() -> list[str]:
    """The modules imported in this process (the tests check that the helper never loads torch)."""
    return sorted(sys.modules)


JOBS = {"prdc": prdc, "transport_duals": transport_duals, "loaded_modules": loaded_modules}


# ------------------------------------------------------------- the helper ---
class _Helper:
    """A `python -P offload.py` process and the lock that keeps one request at a time on its pipes."""

    def __init__(self, argv: list[str] | None = None):
        # this very file as a script, which needs nothing of divgen; -P: its folder is not put on the path,
        # where divgen's modules would shadow top-level ones of the same name
        argv = argv or [sys.executable, "-P", str(Path(__file__).resolve())]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env={**os.environ, **POT_WITHOUT_TORCH})
        self.lock = threading.Lock()
        self.ready = False

    def wait_ready(self) -> None:
        """The helper's first message, READY once its imports are done; TimeoutError after READY_SECONDS (a
        helper stuck in an import would otherwise hold the command forever)."""
        import select

        if not select.select([self.process.stdout], [], [], READY_SECONDS)[0]:
            raise TimeoutError(f"the helper process did not start in {READY_SECONDS:g} s")
        if _receive(self.process.stdout) != [True, READY]:
            raise RuntimeError("the helper process did not start")
        self.ready = True

    def call(self, name: str, args: tuple):
        with self.lock:
            if not self.ready:
                self.wait_ready()
            _send(self.process.stdin, [name, list(args)])
            ok, result = _receive(self.process.stdout)
        if not ok:
            raise RuntimeError(result)
        return result

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


_helper: _Helper | None = None


def start() -> None:
    """Start the helper process, which imports prdc and POT at once (a no-op if one runs)."""
    global _helper
    if _helper is None and sys.executable:  # an embedded Python may not know its own executable
        try:
            _helper = _Helper()
        except OSError:  # no process to be had: run calls the functions here
            _helper = None


def stop() -> None:
    """End the helper process, if one runs."""
    global _helper
    helper, _helper = _helper, None
    if helper is not None:
        helper.close()


def run(name: str, *args):
    """JOBS[name](*args): in the helper when one runs, else in this process. A helper that fails (it
    died, or the job raised there) is stopped, and the job runs here, where an error is raised as usual."""
    helper = _helper
    if helper is not None:
        try:
            return helper.call(name, args)
        except BaseException as e:  # an interrupt too: its answer would be the next request's
            stop()
            # ValueError: a pipe that another thread's stop closed meanwhile, or a message that is not one
            if not isinstance(e, (OSError, ValueError, TypeError, EOFError, RuntimeError)):
                raise
    return JOBS[name](*args)


def _serve() -> None:
    """The helper's loop: import the libraries, then answer (name, args) requests until stdin closes."""
    channel_in, channel_out = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the channel
    importlib.import_module("ot")  # the point of the helper: these imports overlap the caller's
    importlib.import_module("prdc")
    _send(channel_out, [True, READY])

    while True:
        try:
            name, args = _receive(channel_in)
        except EOFError:
            return
        try:
            answer = [True, JOBS[name](*args)]
        except Exception as e:  # told to the caller, which runs the job itself and raises it there
            answer = [False, f"{type(e).__name__}: {e}"]
        _send(channel_out, answer)


# ----------------------------------------------------------- the messages ---
def _send(stream, value) -> None:
    """A message: `value` (lists, tuples and str-keyed dicts of JSON's scalars and NumPy arrays of numbers)
    as one line of JSON in which each array is its dtype and shape, then the arrays' bytes in that order.
    Neither side unpickles anything."""
    import numpy as np

    arrays = []

    def encode(x):
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise TypeError("offload sends arrays of numbers only")
            arrays.append(np.ascontiguousarray(x))
            return {"array": [x.dtype.str, list(x.shape)]}
        if isinstance(x, (list, tuple)):
            return [encode(v) for v in x]
        if isinstance(x, dict):
            return {"dict": [[str(k), encode(v)] for k, v in x.items()]}
        return x

    stream.write(json.dumps(encode(value)).encode() + b"\n")
    for a in arrays:
        stream.write(a.tobytes())
    stream.flush()


def _receive(stream):
    """The value of the next message on `stream` (_send); EOFError at its end or in a message cut short."""
    import numpy as np

    line = stream.readline()
    if not line.endswith(b"\n"):
        raise EOFError("the other process closed the channel")

    def decode(x):
        if isinstance(x, list):
            return [decode(v) for v in x]
        if isinstance(x, dict) and "array" in x:
            dtype, shape = np.dtype(x["array"][0]), tuple(x["array"][1])
            size = dtype.itemsize * math.prod(shape)
            data = stream.read(size)
            if len(data) != size:
                raise EOFError("the other process closed the channel")
            return np.frombuffer(data, dtype).reshape(shape).copy()
        if isinstance(x, dict):
            return {k: decode(v) for k, v in x["dict"]}
        return x

    return decode(json.loads(line))


if __name__ == "__main__":
    _serve()
