"""Ctrl-C (issue 26, sections 2 and 3): the commands and their worker processes stop at once with status 130, and
an interrupted call ends promptly with ``KeyboardInterrupt``, whatever it was doing, and leaves the process usable.

The interrupted processes are subprocesses (``tests/interrupt_probe.py`` for calls), each with an empty numba
cache of its own (``NUMBA_CACHE_DIR``), so that the interrupts land while numba compiles. A few random trials run
by default; ``FASTDECONV_INTERRUPT_TRIALS=N`` runs N (``FASTDECONV_INTERRUPT_COLD=1``: each with an empty cache).
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest

import fastdeconv as fd
from fastdeconv import _compiled, _interrupts, _runtime, _threads

HERE = Path(__file__).parent
PROBE = HERE / "interrupt_probe.py"
PROMPT = 2.0  # seconds from the signal to the KeyboardInterrupt (measured: under 0.2)
HANG = 180  # seconds after which a process counts as hung
OUT_TRIALS = 24  # interrupted calls into ``out`` per probe process, after its first call


def _env(tmp_path, **extra):
    numba_cache = tmp_path / "numba"
    numba_cache.mkdir(exist_ok=True)
    return {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), "FASTDECONV_CACHE_DIR": str(tmp_path / "fastdeconv"),
            "FASTDECONV_CALIBRATE": "0", **extra}


def _live_group(pgid: int) -> list[str]:
    """The live processes (not zombies) of process group ``pgid``: their command lines."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # (ended meanwhile)
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(cmdline)
    return found


# --------------------------------------------------------------------------- section 2: the command line


def _interrupt_command(tmp_path, argv, workers: int) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """Start ``python -m fastdeconv ARGV`` in a session of its own, wait until ``workers`` worker processes of it
    run (plus a second: they are compiling), send SIGINT to its process group as a terminal's Ctrl-C does; return
    the finished process, the seconds it took to end, and what of its group still lives a moment later."""
    proc = subprocess.Popen([sys.executable, "-m", "fastdeconv", *argv], env=_env(tmp_path), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while sum("spawn_main" in c for c in _live_group(proc.pid)) < workers:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"no {workers} worker processes after 120 s"
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=HANG)
        took = time.monotonic() - sent
        deadline = time.monotonic() + 3
        while _live_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), took, _live_group(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _a_later_call_works(tmp_path):
    """A new process on the same caches: a call that compiles or loads kernels (the interrupted run may have
    written some), against the reference."""
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
              "import numpy as np, fastdeconv as fd\n"
              "from reference import conv_transpose_ref\n"
              "rng = np.random.default_rng(1)\n"
              "x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)\n"
              "w = rng.standard_normal((16, 8, 4, 4)).astype(np.float32)\n"
              "y = fd.conv_transpose(x, w, stride=2, padding=1, method='gather')\n"
              "ref = conv_transpose_ref(x.astype(float), w.astype(float), stride=2, padding=1)\n"
              "assert np.allclose(y, ref, rtol=1e-4, atol=1e-4)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=HANG)
    assert proc.returncode == 0, proc.stderr


def _own_files_valid(tmp_path):
    for path in (tmp_path / "fastdeconv").glob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_ctrl_c_stops_warmup_and_its_workers_with_status_130(tmp_path):
    """Issue 26.2: warmup went on for minutes after a Ctrl-C (its parent waited in ProcessPoolExecutor's shutdown
    for every queued unit, its workers kept compiling) and then died of the signal."""
    proc, took, alive = _interrupt_command(tmp_path, ["warmup", "--dtypes", "float32", "--jobs", "2",
                                                      "--no-progress"], workers=2)
    assert proc.returncode == 130, proc.stderr
    assert took < 5, f"warmup took {took:.1f} s to end after Ctrl-C"
    assert alive == [], f"still running after warmup ended: {alive}"
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    _own_files_valid(tmp_path)
    _a_later_call_works(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="compare compiles ahead in worker processes on 2+ cores")
def test_ctrl_c_stops_compare_and_its_workers_with_status_130(tmp_path):
    proc, took, alive = _interrupt_command(tmp_path, ["compare", "--quick", "--peers", "none", "--no-progress"],
                                           workers=2)
    assert proc.returncode == 130, proc.stderr
    assert took < 5, f"compare took {took:.1f} s to end after Ctrl-C"
    assert alive == [], f"still running after compare ended: {alive}"
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    _own_files_valid(tmp_path)  # (the roofline measured before the workers started)
    _a_later_call_works(tmp_path)


# --------------------------------------------------------------------------- section 3: calls


def test_an_interrupt_inside_llvmlites_lock_leaves_the_process_usable(tmp_path):
    """Issue 26.3, the hang: a Ctrl-C that lands while the main thread holds llvmlite's lock (numba compiling in
    the calling thread) left it held, and the next compilation in a pool thread waited for it forever (the caller
    with it, deaf to further Ctrl-C). Now no compilation runs where a signal lands."""
    proc = subprocess.run([sys.executable, str(PROBE), "inject"], env=_env(tmp_path, NUMBA_NUM_THREADS="2"),
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "first call interrupted" in lines, proc.stdout  # (the signal was sent while numba compiled)
    assert any(line.startswith("interrupted 0 0 ") for line in lines), proc.stdout


def test_interrupts_at_random_moments_end_calls_promptly(tmp_path):
    """Issue 26.3: Ctrl-C at a random moment of a loop of parallel calls into ``out=`` (the first trial in a
    process with an empty numba cache: the first calls compile), the first call of each process included."""
    trials = int(os.environ.get("FASTDECONV_INTERRUPT_TRIALS", "3"))
    cold = os.environ.get("FASTDECONV_INTERRUPT_COLD") == "1"
    rng = random.Random()
    latencies = []
    for trial in range(trials):
        run_dir = tmp_path / (f"trial{trial}" if cold else "shared")
        run_dir.mkdir(exist_ok=True)
        proc = subprocess.Popen([sys.executable, str(PROBE), "loop"], env=_env(run_dir, NUMBA_NUM_THREADS="2"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            delay = rng.uniform(0.0, 4.0)
            time.sleep(delay)
            sent = time.time()
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=HANG)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # (the probe dumps its threads' stacks: where it hangs)
                time.sleep(2)
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"trial {trial}: hung after an interrupt {delay:.2f} s after the start; stacks:\n"
                            f"{(err or '')[-6000:]}")
        finally:
            proc.kill()
            proc.wait()
        what = f"trial {trial}, interrupt {delay:.2f} s after the start:\n{out}\n{err[-3000:]}"
        assert proc.returncode == -signal.SIGINT, what  # the KeyboardInterrupt went all the way up
        assert err.rstrip().endswith("KeyboardInterrupt") and "RuntimeError" not in err, what
        report = [line.split() for line in out.splitlines() if line.startswith("interrupted ")]
        assert len(report) == 1, what
        _, still_writing, wrong, caught = report[0]
        assert still_writing == "0" and wrong == "0", what
        latencies.append(float(caught) - sent)
        assert latencies[-1] < PROMPT, what + f"\nKeyboardInterrupt {latencies[-1]:.2f} s after the signal"
    print(f"{trials} trials: KeyboardInterrupt at most {max(latencies):.3f} s after the signal")


def test_calls_import_nothing_in_the_main_thread_outside_a_deferred_stretch(tmp_path):
    """Issue 26.3: a Ctrl-C landing in an import that a first call made in the main thread (the BLAS controls
    imported scipy.linalg there) could leave the import system's lock state broken; the compile thread, which
    imports as numba loads kernels, then waited forever, and with it the next call (a rare hang of
    ``test_interrupts_at_random_moments_end_calls_promptly``), or the SIGINT was dropped in an import clean-up
    callback. Every import on a call's path now runs with SIGINT deferred (``_interrupts.import_module``)."""
    env = {**os.environ, "FASTDECONV_CACHE_DIR": str(tmp_path / "fastdeconv"), "FASTDECONV_CALIBRATE": "0",
           "NUMBA_NUM_THREADS": "2"}  # (numba's own cache: the kernels load, as in a new session)
    proc = subprocess.run([sys.executable, str(PROBE), "imports"], env=env, capture_output=True, text=True,
                          timeout=HANG)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("done"), proc.stdout + proc.stderr[-3000:]
    outside = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("outside ")]
    assert outside == [], f"imported in the main thread, interruptibly: {outside}"


def test_an_interrupted_call_leaves_out_untouched_or_complete(tmp_path):
    """Issue 26.3: a call interrupted between two of its chunks had written part of ``out`` (scatter-gemm's and
    gather-gemm-cols' slabs add to the partial sums of the ones before, so the call cannot simply be redone). Now
    the kernels are compiled or loaded before ``out`` is first written (an interrupt until then leaves it
    untouched), and from then on the interrupt waits for the end of the compute (``out`` complete).

    Each probe process interrupts its very first call (loading its kernels from numba's cache, or compiling them
    when it is cold) and then ``OUT_TRIALS`` calls at random moments (see ``interrupt_probe.py``); one process by
    default, ``FASTDECONV_INTERRUPT_TRIALS=N``: N // 3 (``FASTDECONV_INTERRUPT_COLD=1``: each with an empty numba
    cache, so that its first call compiles).
    """
    processes = max(1, int(os.environ.get("FASTDECONV_INTERRUPT_TRIALS", "3")) // 3)
    cold = os.environ.get("FASTDECONV_INTERRUPT_COLD") == "1"
    rng = random.Random()
    for run in range(processes):
        if cold:
            (tmp_path / f"run{run}").mkdir()
            env = _env(tmp_path / f"run{run}", NUMBA_NUM_THREADS="2")
        else:  # numba's own cache: the kernels load, as in a new session
            env = {**os.environ, "NUMBA_NUM_THREADS": "2", "FASTDECONV_CACHE_DIR": str(tmp_path / "fastdeconv"),
                   "FASTDECONV_CALIBRATE": "0"}
        first = rng.randrange(3)
        proc = subprocess.run([sys.executable, str(PROBE), "outs", str(first), str(OUT_TRIALS)], env=env,
                              capture_output=True, text=True, timeout=HANG)
        what = f"process {run} (first call: case {first}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
        assert proc.returncode == 0, what
        report = [line.split() for line in proc.stdout.splitlines() if line.startswith("outs ")]
        assert len(report) == 1, what
        untouched, complete, torn, inside = map(int, report[0][1:5])
        latency = float(report[0][5])
        assert untouched + complete + torn == OUT_TRIALS + 1, what
        assert torn == 0, f"{torn} of {OUT_TRIALS + 1} interrupted calls left out partly written; " + what
        assert inside >= OUT_TRIALS // 3, what  # (most interrupts landed inside a call, not after it)
        assert latency < PROMPT, what


def test_a_worker_waiting_for_a_compilation_stops_when_its_call_is_abandoned():
    """The caller's share fails while a pool worker of the call waits for numba to compile its kernel: the call
    ends within a moment (it used to wait for the whole compilation, in the worker's thread), and the kernel is
    compiled all the same."""
    if _threads.max_threads() < 2:
        pytest.skip("needs a pool worker: NUMBA_NUM_THREADS >= 2")
    from numba.core import event

    njit = getattr(_compiled, "njit", numba.njit)

    @njit(cache=False)
    def add_one(a):
        return a + 1.0

    started, started_at = threading.Event(), []

    class SlowCompile(event.Listener):  # numba compiling a large kernel
        def on_start(self, ev):
            started_at.append(time.monotonic())
            started.set()
            time.sleep(1.5)

        def on_end(self, ev):
            pass

    def work(chunks):
        for chunk in chunks:
            if threading.current_thread() is threading.main_thread():
                started.wait(10)  # (the worker is in the compilation now)
                raise ValueError("the caller's share failed")
            add_one(np.zeros(chunk))

    fd.set_num_threads(2)
    try:
        with event.install_listener("numba:compile", SlowCompile()):
            with pytest.raises(ValueError, match="caller's share"):
                _runtime.run_parallel(work, [1, 2])
            assert started.is_set()
            took = time.monotonic() - started_at[0]
            assert took < 1.0, f"the failed call waited {took:.2f} s for its worker's compilation"
            assert add_one(np.zeros(1))[0] == 1.0
    finally:
        fd.set_num_threads(_threads.max_threads())


def test_deferred_delivers_a_sigint_when_the_block_ends():
    landed = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # bytecodes on which Python would run the handler
                landed.append(1)
    assert len(landed) == 1000
    with pytest.raises(KeyboardInterrupt):  # nested: handed outward, to the installed handler
        with _interrupts.deferred():
            with _interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
            landed.append(2)
    assert landed[-1] == 2
    with pytest.raises(KeyboardInterrupt) as info:  # the block failed meanwhile: the interrupt is not lost
        with _interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            raise ZeroDivisionError
    assert isinstance(info.value.__context__, ZeroDivisionError)
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with _interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            assert calls == []
        assert calls == [signal.SIGINT]  # the program's own handler, once, at the end
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    seen = []

    def in_a_thread():  # signals reach the main thread only: nothing to defer, nothing changed
        with _interrupts.deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
