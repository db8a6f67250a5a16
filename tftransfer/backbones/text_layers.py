"""The Keras layers of a KerasHub text classifier: tokenizer, encoder wrapper, pooling.

`build_text_classifier()` puts them in a Functional model: strings ->
`TextPreprocessing` -> `TextBackbone` -> `TextPooling` -> head. Each is
registered with Keras (`tftransfer>...`), so `.keras` files load with
`import tftransfer` (and `keras_hub` importable).
"""

import importlib

import keras
import tensorflow as tf
from keras import ops

from tftransfer.backbones.backbone import Backbone

# KerasHub names the encoder blocks of every BERT-family backbone this way.
TRANSFORMER_BLOCK_PATTERN = r"^(transformer_layer_\d+)$"
SERVING_REQUIREMENTS = ("tensorflow-text",)


def require_keras_hub():
    """Imports keras_hub, or says how to install it."""
    try:
        return importlib.import_module("keras_hub")
    except ImportError as error:
        raise ImportError(
            "KerasHub text backbones need keras-hub and tensorflow-text: "
            "pip install 'keras-hub==0.32.0' 'tensorflow-text==2.21.1' safetensors "
            f"(`make install` does it). ({error})"
        ) from None


@keras.saving.register_keras_serializable(package="tftransfer")
class TextPreprocessing(keras.layers.Layer):
    """A KerasHub text preprocessor as a layer of a Functional model over strings.

    It runs the checkpoint's own tokenizer and packer (TensorFlow Text ops,
    also when the model is called eagerly, so `model(x)`, `predict` and an
    exported SavedModel tokenize alike), then trims the padding to the
    batch's longest sequence: attention costs grow with the padded length,
    and masked tokens change nothing the model computes.

    Args:
        preprocessor: a `keras_hub.models.TextClassifierPreprocessor` (for
            example `BertTextClassifierPreprocessor`).
        trim_padding: bool. Cut the packed batch to its longest sequence.
            Defaults to `True`.
        **kwargs: Base layer keyword arguments.

    Example:

    >>> import keras_hub, tftransfer
    >>> tokenizer = keras_hub.models.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
    >>> layer = tftransfer.backbones.TextPreprocessing(
    ...     keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16))
    >>> layer(["a b", "a"])["token_ids"].numpy().tolist()
    [[2, 5, 6, 3], [2, 5, 3, 0]]
    """

    serving_requirements = SERVING_REQUIREMENTS

    def __init__(self, preprocessor, trim_padding=True, **kwargs):
        kwargs.setdefault("name", "text_preprocessing")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.trim_padding = bool(trim_padding)
        self.sequence_length = getattr(preprocessor, "sequence_length", None)
        # Strings go in as they are (no conversion to a backend float tensor).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self._eager_function = None
        self.built = True

    def _preprocess(self, texts):
        texts = tf.convert_to_tensor(texts, tf.string)
        outputs = self.preprocessor(texts)
        outputs = {
            "token_ids": tf.cast(outputs["token_ids"], tf.int32),
            "segment_ids": tf.cast(outputs["segment_ids"], tf.int32),
            "padding_mask": tf.cast(outputs["padding_mask"], tf.int32),
        }
        if self.trim_padding:
            longest = tf.reduce_max(tf.reduce_sum(outputs["padding_mask"], axis=1))
            longest = tf.maximum(longest, 1)
            outputs = {key: value[:, :longest] for key, value in outputs.items()}
        return outputs

    def call(self, inputs):
        if tf.executing_eagerly():
            # KerasHub runs a pure-Python tokenizer when called eagerly; the
            # graph path (tf.data, fit, SavedModel) uses TensorFlow Text. One
            # path everywhere keeps eager calls equal to served predictions.
            if self._eager_function is None:
                self._eager_function = tf.function(
                    self._preprocess, input_signature=[tf.TensorSpec([None], tf.string)])
            return self._eager_function(tf.reshape(tf.convert_to_tensor(inputs, tf.string),
                                                   [-1]))
        return self._preprocess(inputs)

    def compute_output_spec(self, inputs):
        length = None if self.trim_padding else self.sequence_length
        shape = (inputs.shape[0], length)
        return {key: keras.KerasTensor(shape, dtype="int32")
                for key in ("token_ids", "segment_ids", "padding_mask")}

    def get_config(self):
        config = super().get_config()
        config.update({
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "trim_padding": self.trim_padding,
        })
        return config

    @classmethod
    def from_config(cls, config):
        require_keras_hub()
        config = dict(config)
        config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tftransfer")
class TextPooling(keras.layers.Layer):
    """Pools a transformer's token outputs into one vector per text.

    Args:
        mode: str. `"mean"`: the mean of the token vectors over the padding
            mask (what sentence-transformers checkpoints are trained for);
            `"cls"`: the first ([CLS]) token's vector. Defaults to `"mean"`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `[sequence_output, padding_mask]`: `[batch, length, features]`
            and `[batch, length]` (1 for tokens, 0 for padding).

    Example:

    >>> import numpy as np, tftransfer
    >>> pooling = tftransfer.backbones.TextPooling("mean")
    >>> tokens = np.array([[[1.0], [3.0], [100.0]]])
    >>> pooling([tokens, np.array([[1, 1, 0]])]).numpy().tolist()
    [[2.0]]
    """

    def __init__(self, mode="mean", **kwargs):
        kwargs.setdefault("name", "text_pooling")
        super().__init__(**kwargs)
        if mode not in ("mean", "cls"):
            raise ValueError(f"mode: expected 'mean' or 'cls'; received {mode!r}.")
        self.mode = mode

    def call(self, inputs):
        sequence, mask = inputs
        if self.mode == "cls":
            return sequence[:, 0, :]
        mask = ops.cast(ops.expand_dims(mask, -1), sequence.dtype)
        total = ops.sum(sequence * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        sequence_shape = input_shape[0]
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


@keras.saving.register_keras_serializable(package="tftransfer")
class TextBackbone(Backbone):
    """A KerasHub transformer backbone's graph, in inference mode while frozen.

    It shares the KerasHub backbone's layers and weights (a Functional model
    over `token_ids`, `segment_ids` and `padding_mask`, returning its dict of
    outputs) and adds what transfer needs: named blocks for
    `tftransfer.unfreeze(model, blocks=k)` (the encoder layers, matched by
    `block_pattern`; embeddings are the stem; the pooler follows the last
    block), inference mode (dropout off) while frozen, and LoRA through
    `tftransfer.training.enable_lora()`.

    Args:
        inputs: The Functional inputs, as for `keras.Model`.
        outputs: The Functional outputs, as for `keras.Model`.
        inference_mode: bool. Defaults to `True`.
        handle: str or None. Where the weights came from (recorded in
            export manifests). Defaults to None.
        block_pattern: str. A regular expression over layer names whose
            groups name a block. Defaults to KerasHub's encoder layer names.
        **kwargs: Other `keras.Model` arguments.

    Example:

    >>> import keras_hub, tftransfer
    >>> bert = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
    ...     intermediate_dim=16, max_sequence_length=16)
    >>> backbone = tftransfer.backbones.TextBackbone.from_model(
    ...     bert, outputs=["sequence_output"])
    >>> [name for name in backbone.block_names()]
    ['stem', 'transformer_layer_0', 'transformer_layer_1']
    """

    def __init__(self, *args, inference_mode=True, handle=None,
                 block_pattern=TRANSFORMER_BLOCK_PATTERN, **kwargs):
        super().__init__(*args, inference_mode=inference_mode, **kwargs)
        self.handle = handle
        self.block_pattern = block_pattern
        self.block_boundary = "start"

    @classmethod
    def from_model(cls, model, *, outputs=None, inference_mode=True, handle=None,
                   block_pattern=TRANSFORMER_BLOCK_PATTERN):
        """Wraps a KerasHub (Functional) backbone, sharing its layers and weights.

        `outputs` names the outputs to keep (all by default): layers that
        only feed the others (BERT's pooler, under mean pooling) are left
        out, so they neither train without gradients nor get saved.
        """
        kept = model.output
        if outputs is not None:
            kept = {key: model.output[key] for key in outputs}
        return cls(inputs=model.input, outputs=kept, name=model.name,
                   inference_mode=inference_mode, handle=handle, block_pattern=block_pattern)

    def block_names(self):
        """The block names bottom to top: `"stem"`, then one per encoder layer."""
        from tftransfer.backbones.blocks import assign_blocks

        names, _ = assign_blocks([layer.name for layer in self.layers], self.block_pattern,
                                 self.block_boundary)
        return names

    def get_config(self):
        config = super().get_config()
        config["handle"] = self.handle
        config["block_pattern"] = self.block_pattern
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from keras.src.models.functional import functional_from_config

        require_keras_hub()
        config = dict(config)
        inference_mode = config.pop("inference_mode", True)
        handle = config.pop("handle", None)
        block_pattern = config.pop("block_pattern", TRANSFORMER_BLOCK_PATTERN)
        model = functional_from_config(cls, config, custom_objects=custom_objects)
        model.inference_mode = bool(inference_mode)
        model.handle = handle
        model.block_pattern = block_pattern
        model.block_boundary = "start"
        return model
