"""A process for ``tests/test_interrupts.py`` to interrupt: fastdeconv calls into ``out=`` arrays, in a loop.

``python interrupt_probe.py loop`` prints ``ready`` once its arrays are built, then runs the calls of ``CASES``
(parallel GEMM variants: numba kernels compiled on first use, chunks handed to the worker pool) over and over
until a ``KeyboardInterrupt`` arrives, whatever the call is doing then (numba compiling, chunks being handed
out, the caller waiting for its workers). It then checks what issue 26 asks of an interrupted call:

- nothing writes into the ``out=`` array after the call has raised (a worker of that call still running would);
- the process is still usable: every call runs again (further interrupts ignored now) and agrees with the float64
  reference of ``tests/reference.py`` (an interrupt that left a numba or llvmlite lock held, or a half-made
  compilation behind, hangs here or raises, e.g. "no compiled object yet");

prints ``interrupted <calls still writing> <wrong results> <time.time() when it arrived>`` and re-raises the
``KeyboardInterrupt``, so that the process ends as an interrupted Python process does. A hang is the parent's to
detect (a timeout).

``python interrupt_probe.py inject`` interrupts itself at the moment issue 26 names: once fastdeconv is imported
and numba's threads run, it sends itself SIGINT from inside llvmlite's lock, at its next use: numba compiling
the kernels of a call on one thread (in the calling thread, before the fix). Then it runs the checks above, every
call now on two threads (compiling in the pool's threads what is still missing).
"""

import os
import signal
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import conv_transpose_ref  # noqa: E402

import fastdeconv as fd  # noqa: E402

rng = np.random.default_rng(0)
GEOMETRY = {"stride": 2, "padding": 1}
# (x shape, weight shape, method): gather-gemm-cols, then scatter-gemm (each call several chunks, so that the
# workers of the pool take part)
CASES = [((2, 16, 8, 8), (16, 8, 4, 4), "gather"), ((4, 32, 8, 8), (32, 16, 4, 4), "scatter")]
calls = []
for x_shape, w_shape, method in CASES:
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    ref = conv_transpose_ref(x.astype(np.float64), w.astype(np.float64), **GEOMETRY)
    calls.append((x, w, method, np.full(ref.shape, np.nan, np.float32), ref))


def run(i):
    x, w, method, out, _ = calls[i]
    fd.conv_transpose(x, w, method=method, out=out, **GEOMETRY)


def after_interrupt(current):
    """The checks above; ``current`` is the index of the call that was interrupted (None: between calls)."""
    caught = time.time()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    still_writing = 0
    if current is not None:
        out = calls[current][3]
        before = out.copy()
        time.sleep(0.05)
        still_writing = int(not np.array_equal(out, before, equal_nan=True))
    wrong = 0
    for i in range(len(calls)):
        run(i)
        wrong += not np.allclose(calls[i][3], calls[i][4], rtol=1e-4, atol=1e-4)
    print(f"interrupted {still_writing} {wrong} {caught!r}", flush=True)


def loop():
    print("ready", flush=True)
    current = None
    try:
        while True:
            for i in range(len(calls)):
                current = i
                run(i)
                current = None
    except KeyboardInterrupt:
        after_interrupt(current)
        raise


def inject():
    from numba.core import event

    armed = [False]

    class Interrupt(event.Listener):
        def on_start(self, ev):
            if armed[0]:
                armed[0] = False
                print(f"signal sent from llvmlite's lock in {threading.current_thread().name}", flush=True)
                os.kill(os.getpid(), signal.SIGINT)

        def on_end(self, ev):
            pass

    event.register("numba:llvm_lock", Interrupt())
    assert callable(fd.conv_transpose)  # (imported here, and numba starts its threads below: not yet armed)
    fd.set_num_threads(2)
    print("ready", flush=True)
    armed[0] = True
    try:
        with_one_thread(lambda: run(1))
    except KeyboardInterrupt:
        print("first call interrupted", flush=True)
    else:
        print("first call not interrupted", flush=True)
    armed[0] = False
    after_interrupt(None)


def with_one_thread(fn):
    fd.set_num_threads(1)
    try:
        fn()
    finally:
        fd.set_num_threads(2)


if __name__ == "__main__":
    {"loop": loop, "inject": inject}[sys.argv[1]]()
