import numpy as np
import pytest
import tensorflow_datasets as tfds

import tftransfer


class TftransferTinyShapes(tfds.core.GeneratorBasedBuilder):
    """A two-class image dataset built offline in a temporary data_dir."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(12, 10, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20, 0),
                "test": self._generate_examples(6, 100)}

    def _generate_examples(self, count, offset):
        for index in range(count):
            label = index % 2
            value = 30 + index if label == 0 else 200 + index
            yield offset + index, {"image": np.full((12, 10, 3), value, np.uint8),
                                   "label": label}


def test_tfds_dataset_built_in_a_temp_data_dir_loads(tmp_path):
    builder = TftransferTinyShapes(data_dir=str(tmp_path))
    builder.download_and_prepare()
    bundle = tftransfer.data.from_tfds("tftransfer_tiny_shapes", data_dir=str(tmp_path),
                                       image_size=8, batch_size=4, validation_split=0.25)
    assert bundle.class_names == ["dark", "light"]
    assert sum(bundle.counts["train"].values()) == 15
    assert sum(bundle.counts["validation"].values()) == 5
    for name in ("dark", "light"):  # train[:75%] and train[75%:] cover train exactly
        assert bundle.counts["train"][name] + bundle.counts["validation"][name] == 10
    assert bundle.counts["test"] == {"dark": 3, "light": 3}
    for images, labels in bundle.test:
        assert images.shape[1:] == (8, 8, 3) and images.dtype == "float32"
        means = images.numpy().mean(axis=(1, 2, 3))
        np.testing.assert_array_equal(means > 128, labels.numpy() == 1)


def test_tfds_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="name: TFDS has no dataset 'mnistt'.*mnist"):
        tftransfer.data.from_tfds("mnistt", data_dir=str(tmp_path), image_size=8)

    def offline(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(ValueError, match="could not download and prepare.*data_dir=DIR"):
        tftransfer.data.from_tfds("mnist", data_dir=str(tmp_path), image_size=8)
    with pytest.raises(ValueError, match="not prepared"):
        tftransfer.data.from_tfds("mnist", data_dir=str(tmp_path), image_size=8,
                                  download=False)
