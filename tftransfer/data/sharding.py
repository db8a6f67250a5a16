"""Which part of a dataset each worker of a multi-worker strategy reads.

`tf.distribute.MultiWorkerMirroredStrategy` splits an input pipeline among
its workers when it distributes it (`experimental_distribute_dataset`), as
the dataset's `tf.data.Options().experimental_distribute.auto_shard_policy`
says:

- `FILE`: each worker reads its own files. tf.data finds the files by
  walking the pipeline up to a reader dataset (`TFRecordDataset`,
  `TextLineDataset`, `FixedLengthRecordDataset`, ...) and shards the list
  of file names that feeds it. Nothing is read twice. Needs at least as
  many files as workers: with fewer, TF 2.21 fails ("Could not apply FILE
  based sharding") on the workers that got a file and gives the others
  nothing. Files of unequal size give unequal shares.
- `DATA`: every worker runs the whole pipeline and keeps every k-th
  element (batch) of it. Correct for any source, but each worker reads and
  decodes everything, and the order must be the same on every worker
  (a seeded shuffle).
- `OFF`: every worker reads everything.
- `AUTO` (tf.data's default): `FILE` where a reader dataset is found,
  otherwise `DATA`, with a warning in the log.

`shard_policy_for()` says which of these fits a pipeline and
`with_auto_shard()` sets it, on a dataset or on every split of a
`DatasetBundle`.
"""

import dataclasses
import warnings

import tensorflow as tf

from tftransfer.data import pipeline_graph
from tftransfer.data.bundle import SPLITS, DatasetBundle

AutoShardPolicy = tf.data.experimental.AutoShardPolicy
POLICY_NAMES = {policy.name.lower(): policy for policy in AutoShardPolicy}


def shard_policy_for(dataset, *, num_workers=None):
    """The auto-shard policy that splits `dataset` correctly among workers.

    - A pipeline that reads files through a reader dataset (TFRecord files,
      text lines, TFDS datasets, `from_tfrecords`) gets `FILE`: each worker
      reads its own files, and no file is read twice. With `num_workers`
      and fewer files than workers in a file list of the pipeline (a small
      TFDS split is often one file), `DATA` instead, as `FILE` would fail.
    - A pipeline built from tensors gets `DATA`. That includes in-memory
      arrays (`from_arrays`, `from_texts`) and lists of file paths read with
      `tf.io.read_file` in a `map` (`from_directory`, `from_csv`): those
      paths are elements, not files a reader opens, so `FILE` finds nothing
      to shard and fails ("Found an unshardable source dataset"). Under
      `DATA` every worker decodes every image and keeps its share; to split
      the reading itself, shard the path list before the `map` with
      `Dataset.shard(num_workers, worker_index)`.
    - A pipeline read from the tf.data service (`distribute_bundle`) gets
      `OFF`: the service hands out the data. With a shared `job_name` and
      `distributed_epoch`, the trainers split each epoch among them (tf.data
      sets `OFF` itself there). Without one, each trainer reads a whole
      epoch of its own; `DATA` would not fix that, since with several
      service workers the order differs from trainer to trainer, so each
      would keep a different, overlapping part.

    Args:
        dataset: `tf.data.Dataset`.
        num_workers: int or None. The strategy's number of workers, where
            known: file pipelines with fewer files than workers get `DATA`.
            Defaults to None.

    Returns:
        A `tf.data.experimental.AutoShardPolicy`: `FILE`, `DATA` or `OFF`;
        `AUTO` (tf.data's own choice) where the pipeline cannot be
        inspected.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from tftransfer.data.sharding import shard_policy_for
    >>> shard_policy_for(tf.data.Dataset.from_tensor_slices(np.arange(4)).batch(2)).name
    'DATA'
    >>> files = tf.data.TFRecordDataset(["a.tfrecord", "b.tfrecord"])
    >>> shard_policy_for(files).name, shard_policy_for(files, num_workers=3).name
    ('FILE', 'DATA')
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"dataset: expected a tf.data.Dataset; received "
                        f"{type(dataset).__name__}.")
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(
            num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers: expected None or an int >= 1; received "
                         f"{num_workers!r}.")
    graph = pipeline_graph.graph_of(dataset)
    if graph is None:
        return AutoShardPolicy.AUTO
    ops = pipeline_graph.ops_of(graph)
    if any(pipeline_graph.is_op(op, pipeline_graph.SERVICE_OPS) for op in ops):
        return AutoShardPolicy.OFF
    if any(pipeline_graph.is_op(op, pipeline_graph.READER_OPS) for op in ops):
        sizes = pipeline_graph.file_list_sizes(graph)
        if num_workers is not None and sizes and min(sizes) < num_workers:
            return AutoShardPolicy.DATA
        return AutoShardPolicy.FILE
    return AutoShardPolicy.DATA


def _policy(policy, dataset, num_workers):
    if policy is None:
        return shard_policy_for(dataset, num_workers=num_workers)
    if isinstance(policy, AutoShardPolicy):
        return policy
    if isinstance(policy, str) and policy.lower() in POLICY_NAMES:
        return POLICY_NAMES[policy.lower()]
    raise ValueError(f"policy: expected None (choose from the pipeline), one of "
                     f"{sorted(POLICY_NAMES)} or a tf.data.experimental.AutoShardPolicy; "
                     f"received {policy!r}.")


def _with_policy(dataset, policy, num_workers):
    policy = _policy(policy, dataset, num_workers)
    if policy == AutoShardPolicy.DATA:
        graph = pipeline_graph.graph_of(dataset)
        if dataset.options().deterministic is False or (
                graph is not None and pipeline_graph.has_unseeded_shuffle(graph)):
            warnings.warn(
                "with_auto_shard: DATA sharding needs the same element order on every "
                "worker, but this pipeline shuffles without a seed or is not deterministic, "
                "so workers would keep overlapping parts. Build the data with a seed (the "
                "tftransfer.data functions take seed=) or call keras.utils.set_random_seed "
                "with the same value on every worker.", stacklevel=3)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def with_auto_shard(data, policy=None, *, num_workers=None):
    """Sets how a multi-worker strategy splits `data` among its workers.

    Args:
        data: `tf.data.Dataset` or `DatasetBundle`. Every split of a bundle
            gets its own policy.
        policy: None, a name (`"file"`, `"data"`, `"off"`, `"auto"`,
            `"hint"`) or a `tf.data.experimental.AutoShardPolicy`. None
            chooses from the pipeline as `shard_policy_for()` says.
            Defaults to None.
        num_workers: int or None. The strategy's number of workers, for
            `shard_policy_for()`. Defaults to None.

    Returns:
        The dataset with the option set, or a copy of the bundle whose
        datasets have it.

    Under `DATA`, a pipeline that shuffles without a seed (and no global
    seed) would be split wrongly, each worker keeping its share of a
    different order: `with_auto_shard` warns.

    Example:

    >>> import numpy as np, tftransfer
    >>> from tftransfer.data.sharding import with_auto_shard
    >>> data = tftransfer.data.from_arrays(np.zeros((8, 4, 4), "uint8"), np.arange(8) % 2)
    >>> sharded = with_auto_shard(data)
    >>> sharded.train.options().experimental_distribute.auto_shard_policy.name
    'DATA'
    >>> train = with_auto_shard(data.train, "off")
    >>> train.options().experimental_distribute.auto_shard_policy.name
    'OFF'
    """
    if isinstance(data, DatasetBundle):
        changes = {split: _with_policy(getattr(data, split), policy, num_workers)
                   for split in SPLITS if getattr(data, split) is not None}
        return dataclasses.replace(data, **changes)
    if isinstance(data, tf.data.Dataset):
        return _with_policy(data, policy, num_workers)
    raise TypeError(f"data: expected a tf.data.Dataset or a DatasetBundle; received "
                    f"{type(data).__name__}.")
