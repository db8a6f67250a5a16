"""Input pipelines run by the tf.data service, on machines other than the trainer's.

When decoding and augmenting images keeps the accelerator waiting, the
tf.data service moves that work to other machines: a dispatcher hands out
the work, workers run the pipeline, and the trainer only receives batches.

On a cluster, run the dispatcher on one machine and workers on others (each
`.join()` blocks). The pipeline reaches the workers as a graph, Keras
augmentation layers included, so a worker machine needs only TensorFlow (the
trainer's version); `start_data_workers` is a shorthand for
`tf.data.experimental.service.WorkerServer(WorkerConfig(dispatcher_address=
"dispatcher-host:5050", worker_address="worker-host-1:5051", port=5051))`:

```python
from tftransfer.data.service import (
    distribute_bundle, start_data_service, start_data_workers)

# dispatcher machine (dispatcher-host):
start_data_service(workers=0, port=5050, host="dispatcher-host").join()
# each worker machine (worker-host-1, ...):
start_data_workers("grpc://dispatcher-host:5050", port=5051, host="worker-host-1").join()
# the trainer:
tftransfer.fit(model, distribute_bundle(bundle, "grpc://dispatcher-host:5050"))
```

With several trainers (`MultiWorkerMirroredStrategy`), give them the same
`job_name` so that they share each epoch instead of each reading all of it.
Each trainer takes batches as it asks for them, so shares can be uneven: in a
small epoch one trainer may read all of it while the others step on empty
batches.

Caveats (TF 2.21):

- Python code in the pipeline (`tf.py_function`, `numpy_function`,
  `Dataset.from_generator`) fails on a worker in another process ("Could not
  find callback"); `distribute_bundle` warns. tf ops, `tf.function`s and
  Keras preprocessing or augmentation layers (the `augmentation=` presets)
  work.
- A cache to a file (`cache=` a path) is written by every worker at once and
  then read whole by each; `distribute_bundle` refuses it. `cache="memory"`
  and no cache read correctly.
- The element order is not deterministic once there are several workers.
- A distributed dataset's length is unknown to Keras (cardinality -2): Keras
  warns "Your input ran out of data" at the end of an epoch, and `fit`
  sizes `"auto"` epochs and the learning-rate schedule without it (5 epochs
  a phase and a constant learning rate).
- With no worker registered, reading waits for one; a worker that dies
  mid-epoch loses the elements it held (`distributed_epoch`).
"""

import dataclasses
import socket
import time
import warnings

import tensorflow as tf

from tftransfer.data import pipeline_graph
from tftransfer.data.bundle import SPLITS, DatasetBundle

PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
PROTOCOL = "grpc"
# A job no client reads any more (an abandoned iterator, a finished epoch) is
# dropped after 2 s rather than TF's 5 minutes, and workers hear of it within a
# heartbeat of 1 s rather than 30 s: until then they keep producing for it, and
# stopping a worker waits for that (measured: up to a minute in the tests).
JOB_GC_TIMEOUT_MS = 2000
JOB_GC_CHECK_INTERVAL_MS = 500
WORKER_HEARTBEAT_MS = 1000


class DataService:
    """A tf.data service dispatcher and/or workers running in this process.

    Made by `start_data_service()` and `start_data_workers()`. A context
    manager: leaving the `with` block stops the servers.

    Attributes:
        target: str. The dispatcher's address, `"grpc://host:port"`, what
            `distribute_bundle()` takes.
        dispatcher: `tf.data.experimental.service.DispatchServer` or None
            (workers that joined a dispatcher elsewhere).
        workers: list of `tf.data.experimental.service.WorkerServer`.
    """

    def __init__(self, target, *, dispatcher=None, workers=()):
        self.target = target
        self.dispatcher = dispatcher
        self.workers = list(workers)

    def stop(self):
        """Stops the workers, then the dispatcher. Calling it again does nothing."""
        for worker in self.workers:
            worker.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.workers, self.dispatcher = [], None

    def join(self):
        """Blocks while the servers run: the last line of a dispatcher or worker script."""
        if self.dispatcher is not None:
            self.dispatcher.join()
        for worker in self.workers:
            worker.join()

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.stop()

    def __repr__(self):
        return (f"DataService(target={self.target!r}, dispatcher="
                f"{self.dispatcher is not None}, workers={len(self.workers)})")


def _check_count(value, argument, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argument}: expected an int >= {minimum}; received {value!r}.")
    return value


def _check_port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port: expected 0 (any free port) or a port number below 65536; "
                         f"received {port!r}.")
    return port


def _check_host(host):
    if not isinstance(host, str) or not host or "/" in host or " " in host:
        raise ValueError(f"host: expected the name or IP address other machines reach this "
                         f"one by, e.g. 'localhost' or 'worker-1.example.com'; received "
                         f"{host!r}.")
    return host


def _parse_target(service):
    """`(target, host, port)` of a `DataService` or a `"grpc://host:port"` string."""
    if isinstance(service, DataService):
        service = service.target
    if not isinstance(service, str):
        raise TypeError(f"service: expected a DataService (start_data_service()) or a "
                        f"'grpc://host:port' string; received {type(service).__name__}.")
    protocol, separator, address = service.partition("://")
    host, _, port = address.rpartition(":")
    if (not separator or protocol != PROTOCOL or not host or not port.isdigit()
            or not 0 < int(port) < 65536):
        raise ValueError(f"service: expected a dispatcher address 'grpc://host:port', e.g. "
                         f"'grpc://localhost:5050'; received {service!r}.")
    return service, host.strip("[]"), int(port)


def _check_reachable(service, timeout):
    """Fails within `timeout` where nothing listens: tf.data itself keeps retrying."""
    target, host, port = _parse_target(service)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout: expected seconds > 0; received {timeout!r}.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(
                    0.1, deadline - time.monotonic())):
                return target
        except OSError as error:
            # Refused: the dispatcher may be starting; try again until the deadline.
            if time.monotonic() + 0.2 >= deadline:
                raise ConnectionError(
                    f"service: nothing answered at {target} within {timeout:g} s "
                    f"({type(error).__name__}: {error}). Start the dispatcher first "
                    "(start_data_service(), or on the dispatcher machine "
                    "start_data_service(workers=0, port=...).join()) and check the host and "
                    "port."
                ) from None
            time.sleep(0.2)


def _start_workers(dispatcher_address, count, port, host):
    return [
        tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher_address, worker_address=f"{host}:%port%",
            port=port + index if port else 0, heartbeat_interval_ms=WORKER_HEARTBEAT_MS))
        for index in range(count)
    ]


def start_data_service(*, workers=1, port=0, host="localhost"):
    """Starts a tf.data service dispatcher, and `workers` workers, in this process.

    For tests and one machine, start both here. On a cluster, run this with
    `workers=0` on the dispatcher machine and `start_data_workers()` on each
    worker machine (see the module's documentation).

    Args:
        workers: int. Workers to start next to the dispatcher. Defaults to 1.
        port: int. The dispatcher's port; 0 picks a free one. Defaults to 0.
        host: str. The name or IP address clients and workers reach this
            machine by; in the returned `target` and the workers' addresses.
            Defaults to `"localhost"`.

    Returns:
        A `DataService`; stop it with `.stop()` or a `with` block.

    Example:

    >>> from tftransfer.data.service import start_data_service
    >>> with start_data_service(workers=2) as service:
    ...     print(service.target.startswith("grpc://localhost:"), len(service.workers))
    True 2
    """
    _check_count(workers, "workers", 0)
    _check_port(port)
    _check_host(host)
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(
            port=port, job_gc_timeout_ms=JOB_GC_TIMEOUT_MS,
            job_gc_check_interval_ms=JOB_GC_CHECK_INTERVAL_MS))
    actual_port = int(dispatcher.target.rpartition(":")[2])
    service = DataService(f"{PROTOCOL}://{host}:{actual_port}", dispatcher=dispatcher)
    try:
        service.workers = _start_workers(f"{host}:{actual_port}", workers, 0, host)
    except Exception:
        service.stop()
        raise
    return service


def start_data_workers(service, *, workers=1, port=0, host="localhost", timeout=60.0):
    """Starts tf.data service workers in this process that join a running dispatcher.

    Run it on each worker machine of a cluster, then `.join()`.

    Args:
        service: `DataService` or `"grpc://host:port"`: the dispatcher.
        workers: int. How many workers to start. Defaults to 1.
        port: int. The first worker's port (the next ones count up); 0
            picks free ports. Defaults to 0.
        host: str. The name or IP address clients reach this machine by.
            Defaults to `"localhost"`.
        timeout: float. Seconds to wait for the dispatcher to answer
            before raising `ConnectionError`. Defaults to `60.0`.

    Returns:
        A `DataService` holding the workers (its `target` is the
        dispatcher's).

    Example:

    >>> from tftransfer.data.service import start_data_service, start_data_workers
    >>> with start_data_service(workers=0) as service:
    ...     with start_data_workers(service, workers=2) as workers:
    ...         print(workers.target == service.target, len(workers.workers))
    True 2
    """
    _check_count(workers, "workers", 1)
    _check_port(port)
    _check_host(host)
    target = _check_reachable(service, timeout)
    _, dispatcher_host, dispatcher_port = _parse_target(target)
    return DataService(target, workers=_start_workers(
        f"{dispatcher_host}:{dispatcher_port}", workers, port, host))


def _check_pipeline(dataset, split):
    graph = pipeline_graph.graph_of(dataset)
    if graph is None:
        return
    caches = pipeline_graph.file_caches(graph)
    if caches:
        raise ValueError(
            f"bundle: the {split} pipeline caches to the file {caches[0]!r}. Workers of the "
            "tf.data service would all write that cache at once (\"concurrent caching "
            "iterator\"), then each read all of it, so examples repeat. Build the bundle with "
            "cache='memory' or cache=None to run it on the service.")
    python = sorted(op for op in pipeline_graph.ops_of(graph)
                    if pipeline_graph.is_op(op, pipeline_graph.PYTHON_OPS))
    if python:
        warnings.warn(
            f"distribute_bundle: the {split} pipeline calls Python ({', '.join(python)}: "
            "tf.py_function, numpy_function or from_generator). Only workers in this process "
            "can run it; workers on other machines fail with 'Could not find callback'. Use "
            "tf ops or Keras layers in the pipeline instead.", stacklevel=3)


def distribute_bundle(bundle, service, *, processing_mode="distributed_epoch", job_name=None,
                      splits=("train", "validation"), timeout=10.0):
    """A copy of `bundle` whose datasets are produced by the tf.data service.

    Each split's pipeline, as it is (decoding, shuffling, batching,
    augmentation, prefetching), is registered with the dispatcher and run
    by its workers: `dataset.apply(tf.data.experimental.service.distribute(
    ...))`. Everything else in the bundle (class names, counts, weights) is
    kept, so `tftransfer.fit(model, distribute_bundle(bundle, service))`
    trains as before.

    Args:
        bundle: `DatasetBundle`.
        service: `DataService` or `"grpc://host:port"`: the dispatcher.
        processing_mode: str. `"distributed_epoch"`: the workers share each
            epoch, every example is read once per epoch (the source must be
            splittable: arrays, file paths, TFRecord files; every worker
            batches its share, so up to one partial batch a worker).
            `"parallel_epochs"`: every worker runs the whole pipeline, so an
            epoch holds each example once per worker. Defaults to
            `"distributed_epoch"`, which keeps what an epoch means to `fit`.
        job_name: str or None. Trainers that pass the same name share one
            job: under `distributed_epoch` they split each epoch among them,
            as `MultiWorkerMirroredStrategy` needs (tf.data then turns its
            own auto-sharding off). Each split gets its own job,
            `"<job_name>-<split>"`. None: every iteration is a job of its own.
            Defaults to None.
        splits: tuple of `"train"`, `"validation"`, `"test"`. The splits to
            distribute; the others stay local. The test split stays local
            by default so that evaluation reads it in a fixed order.
            Defaults to `("train", "validation")`.
        timeout: float. Seconds to wait for the dispatcher to answer before
            raising `ConnectionError` (tf.data itself would keep retrying).
            Defaults to `10.0`.

    Returns:
        A `DatasetBundle`.

    Raises:
        ValueError: a pipeline caches to a file (`cache=` a path), which the
            workers would write and read concurrently.
        ConnectionError: nothing answers at the service's address.

    A pipeline that calls Python (`tf.py_function`, `from_generator`) gets a
    warning: workers in other processes cannot run it.

    Example:

    >>> import numpy as np, tftransfer
    >>> from tftransfer.data.service import distribute_bundle, start_data_service
    >>> bundle = tftransfer.data.from_arrays(
    ...     np.zeros((10, 8, 8), "uint8"), np.arange(10) % 2, batch_size=4)
    >>> with start_data_service(workers=2) as service:
    ...     remote = distribute_bundle(bundle, service)
    ...     print(sum(int(labels.shape[0]) for _, labels in remote.train))
    8
    """
    if not isinstance(bundle, DatasetBundle):
        raise TypeError(f"bundle: expected a DatasetBundle (tftransfer.data.from_*); received "
                        f"{type(bundle).__name__}.")
    if processing_mode not in PROCESSING_MODES:
        raise ValueError(f"processing_mode: expected one of {PROCESSING_MODES}; received "
                         f"{processing_mode!r}.")
    if job_name is not None and (not isinstance(job_name, str) or not job_name):
        raise ValueError(f"job_name: expected None or a non-empty str; received {job_name!r}.")
    if not isinstance(splits, (tuple, list)) or not all(split in SPLITS for split in splits):
        raise ValueError(f"splits: expected a tuple of names from {SPLITS}; received "
                         f"{splits!r}.")
    target = _check_reachable(service, timeout)
    changes = {}
    for split in splits:
        dataset = getattr(bundle, split)
        if dataset is None:
            continue
        untracked = getattr(dataset, "_tftransfer_untracked", None)
        if untracked is not None:
            # The pipeline flags the files it reads in variables of this process, which
            # the service's workers cannot reach: they get the pipeline without them.
            if not dataset._tftransfer_tracker.complete:
                warnings.warn(
                    f"distribute_bundle: the {split} files are not all checked yet; the "
                    "service's workers drop those that fail to decode without counting them. "
                    "Call bundle.wait_for_file_checks() first to have them found and "
                    "counted.", stacklevel=2)
            dataset = untracked()
        _check_pipeline(dataset, split)
        changes[split] = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=processing_mode, service=target,
            job_name=f"{job_name}-{split}" if job_name else None))
    return dataclasses.replace(bundle, **changes)
