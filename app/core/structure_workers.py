"""Reading untrusted structure files in worker processes, where a bad one can only hurt itself.

`app.core.structures` checks what a client sends before pymatgen reads it, but pymatgen (and
the sympy, numpy and monty beneath it) is large, and one input that gets past those checks
could hold the interpreter lock for a minute or allocate gigabytes. So the service, the
``magorder`` command and the Python API never run it in their own process: each structure is
read in a pool of worker processes (pebble's `ProcessPool`, started with ``spawn`` so that
no worker inherits TensorFlow's threads), each read with

- a wall-clock deadline (`IsolationLimits.timeout_s`): past it the worker is killed and
  replaced, and the structure fails alone;
- a memory cap: the worker's address space may grow by at most `IsolationLimits.memory_mb`
  beyond what it holds once pymatgen is loaded (``RLIMIT_AS``);
- a CPU-time cap of the deadline's length (``RLIMIT_CPU``), in case the clock is fooled.

The caller's thread waits for the answers; the server's event loop, and ``/health`` with it,
never does. A request that finds `IsolationLimits.max_requests` others reading structures is
refused at once (`ServiceBusyError`, a 503 with ``Retry-After``) rather than queued.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import math
import multiprocessing
import resource
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pebble import ProcessExpired, ProcessPool

from app.core.errors import (
    InvalidStructureError,
    MagorderError,
    ServiceBusyError,
    StructureTooLargeError,
    StructureWorkersError,
)
from app.core.features import DEFAULT_LIMITS, FormulaLimits
from app.core.structures import (
    DEFAULT_STRUCTURE_LIMITS,
    ParsedStructure,
    StructureFormat,
    StructureLimits,
    parse_structure,
)

logger = logging.getLogger(__name__)

StructureText = tuple[str, StructureFormat | None]
"""A structure file's text and its format (None: detected from the text)."""
StructureOutcome = ParsedStructure | InvalidStructureError
"""What reading one structure gave: the compound, or why it could not be read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IsolationLimits:
    """How structure files are read in isolation; the service takes these from its settings.

    Attributes:
        workers: Worker processes.
        timeout_s: Longest one structure may take to read, wall clock, in seconds.
        memory_mb: Memory one read may take beyond a worker's footprint with pymatgen
            loaded, in MiB.
        max_requests: Most callers reading structures at once; beyond, `ServiceBusyError`.
        deadline_s: Longest the structures of one call may take together, in seconds.
    """

    workers: int = 2
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_requests: int = 8
    deadline_s: float = 120.0


DEFAULT_ISOLATION = IsolationLimits()
_RETRY_AFTER_S = 1


def _address_space_bytes() -> int | None:
    """This process's virtual memory size, from ``/proc`` (None where there is none)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return next(
            int(line.split()[1]) * 1024
            for line in status.splitlines()
            if line.startswith("VmSize:")
        )
    except (OSError, ValueError, StopIteration):
        return None


def _start_worker(memory_bytes: int) -> None:
    """Load pymatgen's readers, then cap the address space at what they need plus the cap."""
    from pymatgen.io.cif import CifParser  # noqa: F401 - loaded before the cap is measured

    footprint = _address_space_bytes()
    if footprint is not None:
        limit = footprint + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _read_in_worker(
    text: str,
    fmt: StructureFormat | None,
    limits: StructureLimits,
    formula_limits: FormulaLimits,
    cpu_s: int,
) -> ParsedStructure:
    """Read one structure in a worker, every failure a domain error (pickled back)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = math.ceil(used.ru_utime + used.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    # The CPU limit counts the worker's whole life: this read may add `cpu_s` to it.
    soft = spent + cpu_s
    resource.setrlimit(
        resource.RLIMIT_CPU, (soft, hard if hard == resource.RLIM_INFINITY else max(hard, soft))
    )
    try:
        return parse_structure(text, fmt, limits=limits, formula_limits=formula_limits)
    except MagorderError:
        raise
    except MemoryError:
        raise StructureTooLargeError(
            "reading the structure needed more memory than a structure may take"
        ) from None
    except RecursionError:
        raise InvalidStructureError("the structure is nested too deeply to read") from None
    except Exception as exc:  # whatever pymatgen raised past its own checks: a bad file
        raise InvalidStructureError(
            f"not a readable structure: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


class StructureWorkers:
    """A pool of worker processes that read structure files, each read bounded (see module).

    The processes start on first use (or `warm_up`), so code that reads no structure never
    starts them; `close` stops them, as does the end of the process.

    Args:
        isolation: How many workers, and the bounds on each read.
        limits: Bounds on a structure, checked before pymatgen reads it.
        formula_limits: Bounds on its composition.
    """

    def __init__(
        self,
        isolation: IsolationLimits = DEFAULT_ISOLATION,
        limits: StructureLimits = DEFAULT_STRUCTURE_LIMITS,
        formula_limits: FormulaLimits = DEFAULT_LIMITS,
    ) -> None:
        self.isolation = isolation
        self._limits = limits
        self._formula_limits = formula_limits
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None
        self._readers = threading.BoundedSemaphore(isolation.max_requests)

    def _started(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPool(
                    max_workers=self.isolation.workers,
                    initializer=_start_worker,
                    initargs=(self.isolation.memory_mb << 20,),
                    context=multiprocessing.get_context("spawn"),
                )
                atexit.register(self.close)
            return self._pool

    def warm_up(self) -> None:
        """Start the workers now, without waiting for them to load pymatgen."""
        pool = self._started()
        for _ in range(self.isolation.workers):
            pool.schedule(_address_space_bytes)

    def read(self, texts: Sequence[StructureText]) -> list[StructureOutcome]:
        """Read structures in the workers, each failing alone.

        Args:
            texts: The structure files' texts and formats.

        Returns:
            One outcome per text, in order.

        Raises:
            ServiceBusyError: `IsolationLimits.max_requests` calls are reading already.
        """
        if not texts:
            return []
        if not self._readers.acquire(blocking=False):
            raise ServiceBusyError(
                f"{self.isolation.max_requests} requests are reading structures, the most at "
                "once; retry shortly",
                retry_after_s=_RETRY_AFTER_S,
            )
        try:
            return self._read(texts)
        finally:
            self._readers.release()

    def _read(self, texts: Sequence[StructureText]) -> list[StructureOutcome]:
        pool = self._started()
        isolation = self.isolation
        cpu_s = math.ceil(isolation.timeout_s) + 1
        try:
            futures = [
                pool.schedule(
                    _read_in_worker,
                    args=(text, fmt, self._limits, self._formula_limits, cpu_s),
                    timeout=isolation.timeout_s,
                )
                for text, fmt in texts
            ]
        except RuntimeError as exc:  # pebble's pool broke: its workers could not start
            logger.error("the structure workers could not start: %s", exc)
            self.close()  # the next read starts a fresh pool
            raise StructureWorkersError(
                "the worker processes that read structures could not start; retry shortly (a "
                "Python script that reads structures through magorder needs the usual "
                '`if __name__ == "__main__":` guard of programs that start processes)'
            ) from None
        _, late = concurrent.futures.wait(futures, timeout=isolation.deadline_s)
        for future in late:  # past the call's deadline: stopped, each failing alone
            future.cancel()
        return [self._outcome(future) for future in futures]

    def _outcome(self, future: concurrent.futures.Future[ParsedStructure]) -> StructureOutcome:
        isolation = self.isolation
        if future.cancelled():
            return InvalidStructureError(
                f"not read: the request's structures took longer than {isolation.deadline_s:g} s "
                "together (MAGORDER_STRUCTURE_BATCH_DEADLINE_S); send fewer at once"
            )
        try:
            return future.result(timeout=0)
        except InvalidStructureError as exc:
            return exc
        except concurrent.futures.TimeoutError:
            return InvalidStructureError(
                f"reading the structure took longer than {isolation.timeout_s:g} s "
                "(MAGORDER_STRUCTURE_TIMEOUT_S): stopped"
            )
        except ProcessExpired as exc:
            logger.warning("a structure worker stopped (exit code %s); replaced", exc.exitcode)
            return StructureTooLargeError(
                "reading the structure took more memory or CPU time than a structure may "
                f"({isolation.memory_mb} MiB, {isolation.timeout_s:g} s): stopped"
            )
        except Exception as exc:  # e.g. the pool broken by a worker that could not start
            logger.error("a structure could not be read in a worker: %r", exc)
            return InvalidStructureError(f"the structure could not be read: {type(exc).__name__}")

    def close(self) -> None:
        """Stop the workers (reads in progress are cut); a later read starts them again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join(timeout=10)
