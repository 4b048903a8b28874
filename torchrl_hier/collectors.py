"""TorchRL's multi-process collectors, with the error of a failing worker raised in the main process.

TorchRL 0.14 passes a worker's exception (type, message, traceback) to the main process only
while the worker starts. Once it collects, a worker that raises exits, and the main process
gets ``RuntimeError: At least one process failed: worker 0 (exit code 1). Check for more infos
in the log.``; the real error is only printed on the worker's stderr (lost in a notebook, absent
from a run's log). :class:`MultiSyncCollector` and :class:`MultiAsyncCollector` here are the
stock classes (same arguments, same batches) that raise the worker's own exception instead,
with the worker's traceback as a note (or a :class:`WorkerError` naming its type when it does
not unpickle in the main process).

The workers write what they raise to a report file: every policy and transform of
``torchrl_hier`` (a HAM's machine code and choice modules, a level stack's policies, control
rules, rewards and observation maps) runs through :func:`reports_worker_errors`, which writes
the exception and its formatted traceback in a worker of these collectors and re-raises it.
Errors raised outside that code (in the env itself, or in a policy of another library), or in
processes the workers start themselves (a ``ParallelEnv``'s), still reach the main process as
TorchRL's generic error.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tensordict import TensorDictBase
from torchrl import collectors as _torchrl

__all__ = ["MultiAsyncCollector", "MultiSyncCollector", "WorkerError", "reports_worker_errors"]

#: The report directory of the collector whose workers this process belongs to (inherited by
#: the workers, which are started while the collector's constructor sets it).
REPORT_DIR_ENV = "TORCHRL_HIER_WORKER_ERRORS"

F = TypeVar("F", bound=Callable[..., Any])


class WorkerError(RuntimeError):
    """A collector worker's exception that could not be rebuilt in the main process; the
    message names its type and holds its message and the worker's traceback."""


def reports_worker_errors(fn: F) -> F:
    """Wraps a policy's ``forward`` or a transform's step so that an exception leaving it in a
    worker of :class:`MultiSyncCollector`/:class:`MultiAsyncCollector` is written to the
    collector's report directory before it propagates (elsewhere it just propagates)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            _write_report(err)
            raise

    return wrapper  # type: ignore[return-value]


def _write_report(err: Exception) -> None:
    """Writes ``err`` (pickled, if it pickles) and its formatted traceback to
    ``<report dir>/<pid>.pkl``, atomically; the latest error of a process wins."""
    directory = os.environ.get(REPORT_DIR_ENV)
    if directory is None:
        return
    try:
        exception = pickle.dumps(err)
    except Exception:  # unpicklable attributes: the main process gets a WorkerError
        exception = None
    report = {
        "type": f"{type(err).__module__}.{type(err).__qualname__}",
        "message": str(err),
        "traceback": "".join(traceback.format_exception(err)),
        "exception": exception,
    }
    path = os.path.join(directory, f"{os.getpid()}.pkl")
    try:
        with open(f"{path}.tmp", "wb") as file:
            pickle.dump(report, file)
        os.replace(f"{path}.tmp", path)
    except OSError:  # the directory is gone (collector shut down): TorchRL's error remains
        pass


def _read_report(directory: str, pids: list[int], collector: str) -> Exception | None:
    """The exception of the first worker (in worker order) that wrote a report, rebuilt with
    its traceback as a note, or ``None`` when no worker did."""
    for index, pid in enumerate(pids):
        path = os.path.join(directory, f"{pid}.pkl")
        try:
            with open(path, "rb") as file:
                report = pickle.load(file)
        except FileNotFoundError:
            continue
        where = f"{collector} worker {index} (pid {pid})"
        error: Exception | None = None
        if report["exception"] is not None:
            try:
                error = pickle.loads(report["exception"])
            except Exception:  # its class does not import or rebuild here
                error = None
        if not isinstance(error, Exception):
            return WorkerError(
                f"{where} raised {report['type']}: {report['message']}\n\n"
                f"Worker traceback:\n{report['traceback']}"
            )
        error.add_note(f"Raised in {where}; the worker's traceback:\n{report['traceback']}")
        return error
    return None


class _RaisesWorkerErrors:
    """Mixin for TorchRL's multi-process collectors: gives the workers a report directory and
    raises a failed worker's reported exception instead of TorchRL's generic error; its
    ``shutdown`` also shuts the weight-sync schemes down (see there)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._reports = tempfile.TemporaryDirectory(prefix="torchrl_hier_worker_errors_")
        previous = os.environ.get(REPORT_DIR_ENV)
        os.environ[REPORT_DIR_ENV] = self._reports.name  # inherited by the workers started now
        try:
            super().__init__(*args, **kwargs)
        finally:
            if previous is None:
                del os.environ[REPORT_DIR_ENV]
            else:
                os.environ[REPORT_DIR_ENV] = previous
        # TorchRL closes the other workers when one fails; closed processes hide their pid.
        self._worker_pids = [proc.pid for proc in self.procs]

    def iterator(self) -> Iterator[TensorDictBase]:
        try:
            yield from super().iterator()
        except Exception:
            error = _read_report(self._reports.name, self._worker_pids, type(self).__name__)
            if error is None:
                raise
            raise error from None

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().shutdown(*args, **kwargs)
        finally:
            try:
                # TorchRL 0.14.1 leaves its weight-sync schemes to their __del__, which at
                # interpreter exit puts to a multiprocessing queue (starting its feeder
                # thread) and can hang the exiting process; shut them down while that is safe.
                for scheme in (getattr(self, "_weight_sync_schemes", None) or {}).values():
                    scheme.shutdown()
            finally:
                self._reports.cleanup()


class MultiSyncCollector(_RaisesWorkerErrors, _torchrl.MultiSyncCollector):
    """``torchrl.collectors.MultiSyncCollector`` (formerly ``MultiSyncDataCollector``) that
    raises a worker's exception from torchrl_hier code in the main process (module docs)."""


class MultiAsyncCollector(_RaisesWorkerErrors, _torchrl.MultiAsyncCollector):
    """``torchrl.collectors.MultiAsyncCollector`` (formerly ``MultiaSyncDataCollector``) that
    raises a worker's exception from torchrl_hier code in the main process (module docs)."""
