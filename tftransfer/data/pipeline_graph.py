"""What a tf.data pipeline is made of, read from its serialized graph.

Sharding (`sharding.py`) and the tf.data service (`service.py`) need to know
whether a pipeline reads files through a reader dataset, shuffles without a
seed, caches to a file or calls Python: all visible in the graph tf.data
itself serializes when it shards a pipeline or sends it to the service.
"""

import tensorflow as tf

# Source datasets whose file names tf.data's FILE policy can shard (auto_shard.cc).
# CsvDataset is not among them in TF 2.21: FILE fails on it.
READER_OPS = ("TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset",
              "ArrayRecordDataset", "RecordIODataset", "SSTableDataset")
SERVICE_OPS = ("DataServiceDataset",)
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc", "GeneratorDataset")
SHUFFLE_OPS = ("ShuffleDataset", "ShuffleAndRepeatDataset")
CACHE_OPS = ("CacheDataset",)


def graph_of(dataset):
    """The pipeline's `GraphDef`, or None where tf.data cannot serialize it."""
    try:
        # A private method, but the one tf.data's own auto-sharding and the
        # data service serialize a pipeline with.
        serialized = dataset._as_serialized_graph(
            external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
    except Exception:  # noqa: BLE001 (e.g. arrays over 2 GB: callers fall back)
        return None
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(serialized.numpy())
    return graph


def is_op(op, names):
    """Whether `op` is one of `names`, versioned names (TFRecordDatasetV2) included."""
    return any(op == name or op.startswith(name + "V") for name in names)


def ops_of(graph):
    """Op names of the pipeline and of the functions its transformations run."""
    names = {node.op for node in graph.node}
    for function in graph.library.function:
        names.update(node.op for node in function.node_def)
    return names


def _constant_inputs(graph, node, indices):
    """The values of `node`'s inputs at `indices` that are constants, else None."""
    nodes = {each.name: each for each in graph.node}
    values = []
    for index in indices:
        if index >= len(node.input):
            return None
        source = nodes.get(node.input[index].split(":")[0])
        if source is None or source.op != "Const":
            return None
        values.append(tf.make_ndarray(source.attr["value"].tensor))
    return values


def file_list_sizes(graph):
    """Lengths of the constant file-name lists of the pipeline.

    `TFRecordDataset(...)` (one file name or a list), TFDS and
    `from_tfrecords` read their files through a `from_tensor_slices` list;
    `list_files` (a glob at run time) is not counted. Paths sliced for
    `tf.io.read_file` count too, which matters only where a reader is also
    present.
    """
    nodes = {node.name: node for node in graph.node}
    sizes = []
    for node in graph.node:
        if node.op != "TensorSliceDataset":
            continue
        for name in node.input:
            source = nodes.get(name.split(":")[0])
            if source is not None and source.op == "Const" and \
                    source.attr["value"].tensor.dtype == tf.string.as_datatype_enum:
                dims = source.attr["value"].tensor.tensor_shape.dim
                sizes.append(int(dims[0].size) if dims else 1)
                break
    return sizes


def has_unseeded_shuffle(graph):
    """Whether a shuffle of the pipeline draws a new random order in each process.

    `shuffle(seed=None)` with no global seed (`tf.random.set_seed`) stores
    seed and seed2 as 0, which tf.data replaces by random seeds at run time.
    """
    for node in graph.node:
        if is_op(node.op, SHUFFLE_OPS):
            seeds = _constant_inputs(graph, node, (2, 3))
            if seeds is not None and [int(seed) for seed in seeds] == [0, 0]:
                return True
    return False


def file_caches(graph):
    """The file name prefixes of the pipeline's `cache(filename)` steps."""
    names = []
    for node in graph.node:
        if is_op(node.op, CACHE_OPS):
            filename = _constant_inputs(graph, node, (1,))
            if filename is not None and filename[0]:
                value = filename[0].item() if hasattr(filename[0], "item") else filename[0]
                names.append(value.decode() if isinstance(value, bytes) else str(value))
    return names
