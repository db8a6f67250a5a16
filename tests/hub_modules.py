"""Writers of TF-Hub-format SavedModels, with plain TensorFlow (no tftransfer).

They follow the TF2 reusable SavedModel convention that TF-Hub feature-vector
modules use: `__call__(inputs, training)` traced for both values of
`training`, and `variables`, `trainable_variables`, `regularization_losses`
attributes.
"""

import tensorflow as tf


class ImageFeatureModule(tf.Module):
    """Conv -> BatchNorm-like normalization (moving mean) -> ReLU -> mean pool."""

    variables = None  # tf.Module's read-only properties, replaced by saved lists
    trainable_variables = None

    def __init__(self, features=8, seed=0):
        super().__init__()
        rng = tf.random.Generator.from_seed(seed)
        self.kernel = tf.Variable(rng.normal([3, 3, 3, features]) * 0.3, name="conv/kernel")
        self.gamma = tf.Variable(tf.ones([features]), name="bn/gamma")
        self.beta = tf.Variable(tf.zeros([features]), name="bn/beta")
        self.moving_mean = tf.Variable(tf.zeros([features]), trainable=False,
                                       name="bn/moving_mean")
        self.variables = [self.kernel, self.gamma, self.beta, self.moving_mean]
        self.trainable_variables = [self.kernel, self.gamma, self.beta]
        self.regularization_losses = []

    @tf.function
    def __call__(self, images, training=False):
        x = tf.nn.conv2d(images, self.kernel, 1, "SAME")
        if training:
            mean = tf.reduce_mean(x, [0, 1, 2])
            self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * mean)
        else:
            mean = self.moving_mean
        x = tf.nn.relu((x - mean) * self.gamma + self.beta)
        return tf.reduce_mean(x, [1, 2])


def write_image_module(path, features=8, seed=0):
    module = ImageFeatureModule(features, seed)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    module.__call__.get_concrete_function(spec, True)
    module.__call__.get_concrete_function(spec, False)
    tf.saved_model.save(module, str(path))
    return str(path)


class TextEmbeddingModule(tf.Module):
    """Lower-cases, splits on spaces, looks words up in its own vocabulary table,
    and averages their embeddings (unknown words share one bucket)."""

    variables = None
    trainable_variables = None

    def __init__(self, vocabulary, dim=8, seed=0):
        super().__init__()
        keys = tf.constant(vocabulary)
        values = tf.range(len(vocabulary), dtype=tf.int64)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=len(vocabulary))
        rng = tf.random.Generator.from_seed(seed)
        self.embeddings = tf.Variable(rng.normal([len(vocabulary) + 1, dim]) * 0.5,
                                      name="embeddings")
        self.variables = [self.embeddings]
        self.trainable_variables = [self.embeddings]
        self.regularization_losses = []

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences):
        tokens = tf.strings.split(tf.strings.lower(sentences))
        ids = self.table.lookup(tokens)
        vectors = tf.ragged.map_flat_values(tf.gather, self.embeddings, ids)
        total = tf.reduce_sum(vectors, axis=1)
        count = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)[:, None]
        return total / count


def write_text_module(path, vocabulary=("good", "great", "fine", "bad", "awful", "poor"),
                      dim=8, seed=0):
    tf.saved_model.save(TextEmbeddingModule(list(vocabulary), dim, seed), str(path))
    return str(path)


class FeatureMapModule(tf.Module):
    """Returns a feature map [batch, h, w, c], not a vector: a bad backbone."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.ones([1, 1, 3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.nn.conv2d(images, self.kernel, 1, "SAME")


class SignatureOnlyModule(tf.Module):
    """Exposes a `serving_default` signature with dict outputs, and no __call__."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.ones([3, 5]))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def serve(self, images):
        pooled = tf.reduce_mean(images, [1, 2])
        return {"feature_vector": pooled @ self.w, "logits": pooled}


def write_feature_map_module(path):
    tf.saved_model.save(FeatureMapModule(), str(path))
    return str(path)


def write_signature_only_module(path):
    module = SignatureOnlyModule()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)
