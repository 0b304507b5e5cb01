"""Running a recording set's partitions on Dask: one task per partition (errors caught and kept as
:class:`~dsprobe.analysis.set_tasks.PartitionFailure`), merge tasks over the partitions' results in
partition order, progress, and the embedded default cluster. Used by :mod:`dsprobe.analysis.sets`."""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
import warnings
from typing import Any, Callable, Sequence

from dsprobe.analysis.set_tasks import PartitionFailure, guarded
from dsprobe.recording.recording_set import Partition


def _pick(result: Any, i: int | None) -> Any:
    return result if i is None or isinstance(result, PartitionFailure) else result[i]


def _failure_of(result: Any) -> PartitionFailure | None:
    return result if isinstance(result, PartitionFailure) else None


def shared(obj: Any, name: str) -> Any:
    """``obj`` as one node of a Dask graph (named ``name`` and a fresh token): the tasks given it
    share one copy, shipped to each worker that needs it once, instead of one copy per task."""
    try:
        from dask import delayed
    except ImportError as exc:  # pragma: no cover
        raise ImportError("recording sets run on Dask: pip install 'dsprobe[dask]'") from exc
    return delayed(obj, name=f"{name}-{uuid.uuid4().hex[:8]}", traverse=False)


def run_partitions(
    parts: Sequence[Partition],
    task: Callable[..., Any],
    args_of: Callable[[Partition], tuple],
    merges: Sequence[tuple[Callable[..., Any], tuple]],
    *,
    client: Any,
    workers: int | None,
    progress: bool,
    name: str,
    split: bool = False,
) -> tuple[list[Any], list[PartitionFailure]]:
    """One Dask graph: a task per partition (``task(part, *args_of(part))``, errors caught), and per
    merge ``(fn, extra)`` a task ``fn(i, [partition result [i] ...], *extra)`` over the partitions in
    order (``split=False``: the whole partition results, for a single merge). Returns the merges'
    results and the failed partitions."""
    try:
        import dask
        from dask import delayed
    except ImportError as exc:  # pragma: no cover
        raise ImportError("recording sets run on Dask: pip install 'dsprobe[dask]'") from exc
    token = uuid.uuid4().hex[:8]
    outs = [
        delayed(guarded, pure=False)(
            task, p, *args_of(p), dask_key_name=f"{name}-{p.recording}-{p.index}-{token}"
        )
        for p in parts
    ]
    merged = [
        delayed(fn, pure=False)(
            i,
            [delayed(_pick, pure=True)(o, i if split else None) for o in outs],
            *extra,
            dask_key_name=f"{name}-merge-{i}-{token}",
        )
        for i, (fn, extra) in enumerate(merges)
    ]
    fails = [delayed(_failure_of, pure=True)(o) for o in outs]
    if client is None:
        client = local_client(workers)
    if isinstance(client, str):  # one of Dask's local schedulers, no cluster
        bar = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            bar = ProgressBar()
        with bar:
            results = dask.compute(
                *merged, *fails, scheduler=client, **({"num_workers": workers} if workers else {})
            )
    else:
        futures = client.compute([*merged, *fails])
        if progress:
            from distributed import progress as show

            if "dashboard" in client.scheduler_info().get("services", {}):
                print(f"dask dashboard: {client.dashboard_link}")
            show(futures)
        results = client.gather(futures)
    results = list(results)
    failures = [f for f in results[len(merged) :] if f is not None]
    if len(failures) == len(parts) and parts:
        raise RuntimeError(f"every partition failed; the first: {failures[0].error}")
    if failures:
        warnings.warn(
            f"{len(failures)} of {len(parts)} partitions failed and are left out: "
            + "; ".join(str(f) for f in failures),
            RuntimeWarning,
            stacklevel=3,
        )
    return results[: len(merged)], failures


def worker_count(client: Any, workers: int | None) -> int:
    if client is not None and not isinstance(client, str):
        return max(1, len(client.scheduler_info().get("workers", {})))
    return workers or os.cpu_count() or 1


_LOCAL: dict[int, Any] = {}


def local_client(workers: int | None = None) -> Any:
    """The embedded default: a ``distributed.LocalCluster`` of ``workers`` processes (default: one
    per CPU), one thread each, started on first use and reused for the rest of the session."""
    n = workers or os.cpu_count() or 1
    if n not in _LOCAL:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover
            raise ImportError("recording sets run on Dask: pip install 'dsprobe[dask]'") from exc
        try:
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
        except RuntimeError as exc:  # "Nanny failed to start": nothing says why
            raise RuntimeError(
                f"the local Dask cluster ({n} worker processes) did not start: {str(exc).rstrip('.')}. In a script, "
                "Dask's worker processes import the script again, so the call must sit under "
                "`if __name__ == '__main__':`; or pass client='sync' to run in this process"
            ) from exc
        _LOCAL[n] = Client(cluster)
        atexit.register(_close_local, n)
    return _LOCAL[n]


def _close_local(n: int) -> None:
    client = _LOCAL.pop(n, None)
    if client is not None:
        cluster = client.cluster
        client.close()
        cluster.close()
