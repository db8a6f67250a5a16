"""Fine-tuning on cached activations: only the open blocks and the head train.

The frozen part of the backbone below the first open block gives the same
activations in every trial, so they are computed once for all the searched
depths that fit in `activation_cache_mb` (`activations.npz`), and each trial
trains its open blocks and head on them.
"""

import os

import keras
import numpy as np

from tftransfer import files
from tftransfer.training import feature_cache
from tftransfer.training.freezing import find_backbone
from tftransfer.tuning.folds import _labelled_examples


class _ActivationCache:
    """The activation cache of `TransferHyperModel` (a mixin).

    Uses the hypermodel's `data`, `search_space`, `seed`, `text`,
    `cache_dir`, `activation_cache_mb`, `_unfreeze` and `_features_for`, and
    keeps the activations in `_activations` and their labels in
    `_activation_labels`.
    """

    def _depths(self):
        spec = self.search_space["unfreeze_blocks"]
        if isinstance(spec, tuple):
            return list(range(int(spec[0]), int(spec[1]) + 1))
        return sorted({int(v) for v in (spec if isinstance(spec, list) else [spec])})

    def _cached_fine_tuning(self, model, blocks):
        """`(suffix model, train, validation)` on cached activations, or None.

        None when the part before the open blocks is not frozen and
        deterministic (augmented data, a random layer, a backbone in training
        mode or not Functional) or its activations do not fit the budget.
        """
        if not self.activation_cache_mb or self.data.augmented:
            return None
        backbone = find_backbone(model)
        shuffle = feature_cache.shuffles(self.data.train)
        if blocks == 0:
            if feature_cache.why_not_cacheable(model) is not None:
                return None
            (x, y), validation = self._features_for(model)
            _, head = feature_cache.split_model(model)
            train = feature_cache.feature_dataset(x, y, batch_size=self._batch_size(),
                                                  shuffle=shuffle, seed=self.seed)
            validation = (feature_cache.feature_dataset(
                *validation, batch_size=self._batch_size(), shuffle=False, seed=None)
                if validation is not None else None)
            return head, train, validation
        if not isinstance(backbone, keras.Model) or not getattr(backbone, "inference_mode", False):
            return None
        if self.text:
            return None  # token activations: as long as each batch's longest text
        for layer in model.layers[:model.layers.index(backbone)]:
            for sublayer in [layer] + list(layer._flatten_layers(include_self=False)):
                if isinstance(sublayer, feature_cache.RANDOM_LAYERS):
                    return None
        cut = feature_cache.trainable_cut(backbone)
        if not cut or not self._activations_for(model, blocks, cut):
            return None
        (y, vy) = self._activation_labels
        names = [name for name, _ in cut]
        suffix = feature_cache.suffix_model(model, cut)
        train = feature_cache.activation_dataset(
            [self._activations[name][0] for name in names], y,
            batch_size=self._batch_size(), shuffle=shuffle, seed=self.seed)
        validation = (feature_cache.activation_dataset(
            [self._activations[name][1] for name in names], vy,
            batch_size=self._batch_size(), shuffle=False, seed=None)
            if vy is not None else None)
        return suffix, train, validation

    def _batch_size(self):
        if not hasattr(self, "_batch"):
            inputs, _ = next(iter(self.data.train.take(1)))
            self._batch = int(inputs.shape[0])
        return self._batch

    def _examples(self):
        return _labelled_examples(self.data) or 1

    def _activations_for(self, model, blocks, cut):
        """Activations at every searched depth's cut, in one pass; False if over budget."""
        if all(name in self._activations for name, _ in cut):
            return True
        path = os.path.join(self.cache_dir, "activations.npz") if self.cache_dir else None
        if path and os.path.exists(path):
            stored = np.load(path)
            if all(f"{name}.x" in stored.files and
                   stored[f"{name}.x"].shape[1:] == tuple(t.shape[1:]) for name, t in cut):
                for name in {f.rsplit(".", 1)[0] for f in stored.files if "." in f}:
                    self._activations[name] = (
                        stored[f"{name}.x"],
                        stored[f"{name}.vx"] if f"{name}.vx" in stored.files else None)
                self._activation_labels = (stored["y"],
                                           stored["vy"] if "vy" in stored.files else None)
                return True
        backbone = find_backbone(model)
        budget = self.activation_cache_mb * 2 ** 20
        examples = self._examples()
        chosen, used = {}, 0
        # The deepest cuts are the smallest: take depths from 1 up while they fit.
        for depth in sorted(d for d in self._depths() if d > 0):
            self._unfreeze(model, depth)
            tensors = dict(feature_cache.trainable_cut(backbone))
            new = {name: t for name, t in tensors.items() if name not in chosen}
            size = sum(int(np.prod(t.shape[1:])) * 4 for t in new.values()) * examples
            if used + size > budget:
                continue
            chosen.update(new)
            used += size
        self._unfreeze(model, blocks)
        if not all(name in chosen for name, _ in cut):
            return False
        names = list(chosen)
        prefix = feature_cache.prefix_model(model, [chosen[name] for name in names])
        train, y = feature_cache.compute_activations(prefix, self.data.train)
        validation, vy = (feature_cache.compute_activations(prefix, self.data.validation)
                          if self.data.validation is not None else (None, None))
        for i, name in enumerate(names):
            self._activations[name] = (train[i], validation[i] if validation else None)
        self._activation_labels = (y, vy)
        if path:
            arrays = {"y": y}
            if vy is not None:
                arrays["vy"] = vy
            for name, (x, vx) in self._activations.items():
                arrays[f"{name}.x"] = x
                if vx is not None:
                    arrays[f"{name}.vx"] = vx
            os.makedirs(self.cache_dir, exist_ok=True)
            with files.replacing(path) as temporary:
                np.savez(temporary, **arrays)
        return True
