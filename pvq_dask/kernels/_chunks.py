"""Spread independent chunks of work over the calling thread and a few helper threads.

Used for the fitter's per-column numba kernels (compiled with ``nogil=True``) instead of
numba's parallel regions. A parallel region ends at a barrier that waits for every worker
thread, so on a machine whose other cores are busy it waits for the operating system to
schedule them (measured: 10-25 ms per region on a 2-core machine with another process
running, for kernels of a few ms). Here the calling thread claims chunks from a shared
counter itself and waits only for chunks a helper has already started: helpers that get no
CPU in time simply find no work left. Results do not depend on which thread ran a chunk.
"""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

__all__ = ["run_chunks"]

_POOL = None
_POOL_LOCK = threading.Lock()


def _pool(n_helpers):
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != n_helpers:
            _POOL = ThreadPoolExecutor(max_workers=n_helpers, thread_name_prefix="pvq-chunks")
        return _POOL


class _Run:
    """State of one :func:`run_chunks` call: the chunk counter and the chunks in flight."""

    def __init__(self, fn, n_items, chunk, args):
        self.fn, self.n_items, self.chunk, self.args = fn, n_items, chunk, args
        self.n_chunks = -(-n_items // chunk)
        self.counter = itertools.count()      # next() is atomic under the GIL
        self.busy = 0
        self.done = threading.Condition()
        self.error = None

    def work(self):
        while self.error is None:
            with self.done:
                c = next(self.counter)
                if c >= self.n_chunks:
                    return
                self.busy += 1
            try:
                self.fn(c * self.chunk, min((c + 1) * self.chunk, self.n_items), *self.args)
            except BaseException as exc:      # re-raised in the calling thread
                self.error = exc
            finally:
                with self.done:
                    self.busy -= 1
                    self.done.notify_all()


def run_chunks(fn, n_items, chunk, *args):
    """Call ``fn(start, stop, *args)`` for consecutive chunks of ``range(n_items)``.

    The calling thread works through the chunks together with up to
    ``numba.get_num_threads() - 1`` helper threads; ``fn`` must release the GIL (a numba
    function compiled with ``nogil=True``) and its chunks must be independent.

    Parameters
    ----------
    fn : callable
    n_items : int
    chunk : int
        Items per chunk.
    *args
        Passed to every call.
    """
    n_helpers = min(numba.get_num_threads(), -(-n_items // max(chunk, 1))) - 1
    if n_helpers <= 0:
        if n_items > 0:
            fn(0, n_items, *args)
        return
    run = _Run(fn, n_items, max(chunk, 1), args)
    pool = _pool(n_helpers)
    for _ in range(n_helpers):
        pool.submit(run.work)
    run.work()
    with run.done:
        while run.busy:
            run.done.wait()
    if run.error is not None:
        raise run.error
