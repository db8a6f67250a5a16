"""Tiny KerasHub text checkpoints for fast tests (random weights, a 60-word vocabulary)."""

import os

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a of and to is in it that was for on are with as his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them".split()
)
TEXTS = [
    "the word was hot",
    "they use a way",
    "what time is it",
    "she said that one was there",
    "many of them were at the way out",
    "how will we do this",
]


def make_tiny_preset(directory, *, num_layers=2, hidden_dim=16, sentence_transformers=False):
    """Writes a KerasHub preset folder (config, weights, tokenizer) under `directory`."""
    import keras_hub

    os.makedirs(directory, exist_ok=True)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=SPECIAL + WORDS, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(SPECIAL + WORDS), num_layers=num_layers, num_heads=2,
        hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim, max_sequence_length=64)
    backbone.save_to_preset(directory)
    tokenizer.save_to_preset(directory)
    if sentence_transformers:
        os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
        with open(os.path.join(directory, "1_Pooling", "config.json"), "w") as handle:
            handle.write('{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}')
    return directory
