import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    # Remembered file checks (tftransfer.data.file_checks) go to a folder of the test
    # session, not the user's ~/.cache.
    os.environ["TFTRANSFER_CACHE_DIR"] = str(tmp_path_factory.mktemp("tftransfer_cache"))


@pytest.fixture(autouse=True)
def _seed_and_clean_session():
    keras.utils.set_random_seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


@pytest.fixture
def images():
    """A few random images in [0, 255], the classifiers' input range."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="session")
def mobilenet_v2_weights(tmp_path_factory):
    """A MobileNetV2 weights file at 32 px (random values): offline, it stands in for
    ImageNet weights. `weights=None` builds a backbone at random initialization, which
    `fit` and `tune` train as one (its BatchNorm learns); a weights file is pretrained."""
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_32.weights.h5"
    keras.applications.MobileNetV2(include_top=False, weights=None,
                                   input_shape=(32, 32, 3)).save_weights(path)
    keras.backend.clear_session()
    return str(path)
