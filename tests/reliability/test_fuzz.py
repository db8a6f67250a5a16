"""Property-based tests: random bytes and random images through the decoders.

The data pipeline's decoder and an exported model's `predict_images`
signature get random bytes, bytes that start like a PNG / JPEG / GIF / BMP,
valid images of random sizes and channel counts, and valid images with
bytes flipped or cut off. Whatever comes in, the decoder returns a
well-formed image or raises TensorFlow's InvalidArgumentError, and
`predict_images` answers every image: finite probabilities that sum to 1, or
`valid` False and zeros for an image that does not decode. Never a crash,
never NaN.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tftransfer

pytestmark = pytest.mark.slow

MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"BM"]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def encoded_images(draw):
    """A valid PNG, JPEG, GIF or BMP of random size and channels."""
    import tensorflow as tf

    height = draw(st.integers(1, 96))
    width = draw(st.integers(1, 96))
    fmt = draw(st.sampled_from(["png", "jpeg", "bmp", "gif"]))
    channels = draw(st.sampled_from({"png": [1, 2, 3, 4], "jpeg": [1, 3], "bmp": [3, 4],
                                     "gif": [3]}[fmt]))
    seed = draw(st.integers(0, 2 ** 16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    if fmt == "png":
        return tf.io.encode_png(pixels).numpy()
    if fmt == "jpeg":
        return tf.io.encode_jpeg(pixels).numpy()
    if fmt == "bmp":
        return _bmp(pixels)
    return _gif(pixels)


def _bmp(pixels):
    """An uncompressed 24/32-bit BMP (TensorFlow has no BMP encoder)."""
    import struct

    height, width, channels = pixels.shape
    row = width * channels
    padded = (row + 3) // 4 * 4
    body = b"".join(pixels[y, :, ::-1][:, list(range(channels))].tobytes() + b"\0" *
                    (padded - row) for y in range(height - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, channels * 8, 0, len(body),
                       2835, 2835, 0, 0)
    return header + info + body


def _gif(pixels):
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3]).save(buffer, format="GIF")
    return buffer.getvalue()


@st.composite
def damaged_images(draw):
    """A valid image with a few bytes flipped, or cut short."""
    data = bytearray(draw(encoded_images()))
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    for _ in range(draw(st.integers(1, 8))):
        index = draw(st.integers(0, len(data) - 1))
        data[index] = draw(st.integers(0, 255))
    return bytes(data)


anything = st.one_of(st.binary(max_size=512),
                     st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC),
                               st.binary(max_size=512)),
                     damaged_images())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import tensorflow as tf

    model = tftransfer.build_classifier("FashionCNN", 3)
    result = tftransfer.export(model, tmp_path_factory.mktemp("fuzz") / "model",
                               class_names=["a", "b", "c"], parity=False)
    return tf.saved_model.load(result.path).signatures["predict_images"]


def _decode(contents):
    import tensorflow as tf

    try:
        return tftransfer.data.decode_image(tf.constant(contents), (24, 24)).numpy()
    except tf.errors.InvalidArgumentError:
        return None


@SETTINGS
@given(contents=anything)
def test_the_decoder_returns_an_image_or_a_clean_error(contents):
    image = _decode(contents)
    if image is not None:
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8


@SETTINGS
@given(contents=encoded_images())
def test_the_decoder_reads_every_valid_image(contents):
    image = _decode(contents)
    assert image is not None and image.shape == (24, 24, 3)


def _predict(signature, contents):
    """`(probabilities [3], valid)` of one image sent between two valid ones."""
    import tensorflow as tf

    png = tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy()
    outputs = signature(image_bytes=tf.constant([png, contents, png]))
    valid = outputs["valid"].numpy()
    assert valid[0] and valid[2]  # a bad image never costs the others their answer
    return outputs["probabilities"].numpy()[1], bool(valid[1])


@SETTINGS
@given(contents=anything)
def test_predict_images_answers_probabilities_or_a_flag(served, contents):
    probabilities, valid = _predict(served, contents)
    assert np.isfinite(probabilities).all()
    assert valid == (_decode(contents) is not None)  # flagged exactly when it won't decode
    if valid:
        np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-4)
    else:
        np.testing.assert_array_equal(probabilities, 0.0)


@SETTINGS
@given(contents=encoded_images())
def test_predict_images_serves_every_valid_image(served, contents):
    probabilities, valid = _predict(served, contents)
    assert valid and probabilities.shape == (3,)
    assert np.isfinite(probabilities).all()


@SETTINGS
@given(contents=st.lists(anything, min_size=1, max_size=6))
def test_unreadable_files_in_a_folder_are_reported_never_raised(tmp_path, contents):
    paths = []
    for index, payload in enumerate(contents):
        path = tmp_path / f"{index}.img"
        path.write_bytes(payload)
        paths.append(str(path))
    reasons = dict(tftransfer.data.find_unreadable(paths))
    for path, payload in zip(paths, contents):
        if path not in reasons:  # a file kept for training decodes
            assert _decode(payload) is not None
