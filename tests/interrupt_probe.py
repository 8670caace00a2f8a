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

``python interrupt_probe.py outs FIRST TRIALS`` checks what an interrupted call leaves in its ``out=`` array (issue
26.3: untouched or complete). Each call of ``OUT_CASES`` (tens of milliseconds on two threads, several chunks)
gets an ``out`` filled with NaN, and a helper thread sends the process SIGINT at a random moment of it: first the
very first fastdeconv call of the process (case ``FIRST``, which loads or compiles its kernels), then ``TRIALS``
calls of the cases in turn. After each ``KeyboardInterrupt`` its ``out`` must be all NaN or bitwise equal to the
uninterrupted result. Prints ``outs <untouched> <complete> <torn> <interrupts inside a call> <slowest seconds from
the signal to the KeyboardInterrupt>``.
"""

import faulthandler
import os
import queue
import random
import signal
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import conv_transpose_ref  # noqa: E402

import fastdeconv as fd  # noqa: E402

# a process the test finds hung dumps every thread's stack on SIGUSR1 (to stderr), before it is killed
faulthandler.register(signal.SIGUSR1, all_threads=True)

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


# (name, x shape, weight shape, form): long enough (tens of ms on two threads, several chunks) that an interrupt
# lands mid-compute. scatter-gemm through conv_transpose's prepared fast path; gather-gemm-cols (weight-heavy)
# through its validating path (``output_size`` given); scatter-gemm with samples cut in slabs, by an operator.
OUT_CASES = [("fast", (16, 128, 32, 32), (128, 64, 4, 4), "scatter"),
             ("full", (8, 512, 8, 8), (512, 256, 4, 4), "gather"),
             ("operator", (1, 64, 192, 192), (64, 32, 4, 4), "scatter")]


def out_call(name, x, w, method, size):
    """The call of case ``name`` into its ``out``: conv_transpose's fast path, its validating path, an operator."""
    if name == "fast":
        return lambda out: fd.conv_transpose(x, w, method=method, out=out, **GEOMETRY)
    if name == "full":
        return lambda out: fd.conv_transpose(x, w, method=method, out=out, output_size=size, **GEOMETRY)
    op = fd.ConvTranspose(w, method=method, **GEOMETRY)
    return lambda out: op(x, out=out)


def out_calls():
    """[(name, call(out), out)] for ``OUT_CASES``: nothing of fastdeconv runs here but argument checks."""
    made = []
    for name, x_shape, w_shape, method in OUT_CASES:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        size = tuple((n - 1) * 2 - 2 + 4 for n in x_shape[2:])  # (stride 2, padding 1, kernel 4)
        out = np.full((x_shape[0], w_shape[1]) + size, np.nan, np.float32)
        made.append((name, out_call(name, x, w, method, size), out))
    return made


def outs():
    first, trials = int(sys.argv[2]), int(sys.argv[3])
    cases = out_calls()
    requests, sent_at = queue.SimpleQueue(), queue.SimpleQueue()  # (C-level queues: no Python lock to break)

    def sender():  # the Ctrl-C: a signal to the process, from another thread, at the moment asked for
        while True:
            delay = requests.get()
            time.sleep(delay)
            sent_at.put(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=sender, daemon=True).start()
    fd.set_num_threads(2)
    print("ready", flush=True)

    def interrupted(call, out, delay):
        """Run ``call(out)`` with a SIGINT sent ``delay`` seconds after it starts; return (whether the interrupt
        came inside the call, seconds from the signal to the KeyboardInterrupt)."""
        inside = False
        try:
            requests.put(delay)
            inside = True
            call(out)
            inside = False
            time.sleep(30)  # the call ended first: the interrupt arrives here
            raise AssertionError("no KeyboardInterrupt 30 s after the signal")
        except KeyboardInterrupt:
            caught = time.monotonic()
        return inside, caught - sent_at.get()

    # the very first call of the process (numba loading or compiling its kernels, then computing)
    _, call, out = cases[first]
    first_inside, latency = interrupted(call, out, random.uniform(0.0, 0.8))
    first_out = out.copy()
    latencies = [latency]
    refs, seconds = [], []
    for _, call, out in cases:  # the uninterrupted results (compiling what the first call did not), timed
        ref = np.full(out.shape, np.nan, np.float32)
        call(ref)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            call(ref)
            times.append(time.perf_counter() - start)
        refs.append(ref)
        seconds.append(sorted(times)[1])
    counts = {"untouched": 0, "complete": 0, "torn": 0}
    inside_count = int(first_inside)

    def classify(out, ref):
        if np.isnan(out).all():
            return "untouched"
        return "complete" if np.array_equal(out.view(np.uint32), ref.view(np.uint32)) else "torn"

    counts[classify(first_out, refs[first])] += 1
    for trial in range(trials):
        i = trial % len(cases)
        _, call, out = cases[i]
        out.fill(np.nan)
        inside, latency = interrupted(call, out, random.uniform(0.0, 1.2 * seconds[i]))
        inside_count += inside
        latencies.append(latency)
        counts[classify(out, refs[i])] += 1
    print(f"outs {counts['untouched']} {counts['complete']} {counts['torn']} {inside_count} {max(latencies):.3f}",
          flush=True)


def imports():
    """The modules imported in the main thread, outside a deferred stretch, by the first calls of the public
    functions: one printed per line as ``outside <module>``, then ``done``.

    An import cut by Ctrl-C in the main thread can leave the import system's locks taken (or a waiter unwoken),
    and then the compile thread, which imports as numba loads kernels, and any later call waiting for it hang;
    what fastdeconv imports on a call's path goes through ``_interrupts.import_module``, deferred.
    """
    from fastdeconv import _interrupts

    for name in ("conv_transpose", "ConvTranspose", "conv", "conv_transpose_backward", "conv_matrix"):
        getattr(fd, name)  # the package's own imports (deferred by its __getattr__)
    outside = []

    def hook(event, args):
        if event == "import" and threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if getattr(handler, "__func__", None) is not _interrupts.deferred._note:
                outside.append(args[0])

    sys.addaudithook(hook)
    for i in range(len(calls)):
        run(i)
    x, w = calls[1][0], calls[1][1]
    fd.ConvTranspose(w, **GEOMETRY)(x)
    fd.conv(calls[0][4].astype(np.float32), calls[0][1], **GEOMETRY)
    fd.conv_transpose_backward(np.ones_like(calls[0][3]), calls[0][0], calls[0][1], **GEOMETRY)
    fd.conv_matrix(calls[0][1], (4, 4), **GEOMETRY)
    for name in outside:
        print("outside", name)
    print("done", flush=True)


if __name__ == "__main__":
    {"loop": loop, "inject": inject, "outs": outs, "imports": imports}[sys.argv[1]]()
