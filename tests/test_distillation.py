"""Knowledge distillation (distill, Distiller) and L2-SP anchored fine-tuning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.training import anchoring, distillation


def _data(count=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (count, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return x, y


def test_alpha_zero_is_plain_cross_entropy_on_a_batch():
    rng = np.random.default_rng(0)
    student = rng.dirichlet(np.ones(4), size=6).astype("float32")
    teacher = np.log(rng.dirichlet(np.ones(4), size=6)).astype("float32")
    labels = np.array([0, 1, 2, 3, 0, 1])
    packed = np.concatenate([labels[:, None].astype("float32"), teacher], axis=1)
    ours = distillation.PackedDistillationLoss(temperature=4.0, alpha=0.0)(packed, student)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, student)
    assert float(ours) == pytest.approx(float(plain), rel=1e-5)
    # alpha=1: T^2 x KL between the tempered distributions, by hand.
    t = 3.0
    soft_t = np.exp(teacher / t) / np.exp(teacher / t).sum(1, keepdims=True)
    soft_s = np.exp(np.log(student) / t) / np.exp(np.log(student) / t).sum(1, keepdims=True)
    kl = (soft_t * (np.log(soft_t) - np.log(soft_s))).sum(1).mean()
    ours = distillation.PackedDistillationLoss(temperature=t, alpha=1.0)(packed, student)
    assert float(ours) == pytest.approx(t * t * kl, rel=1e-4)


def _kl_to_teacher(teacher, student, x, temperature):
    t_log = np.log(np.clip(teacher.predict(x, verbose=0), 1e-7, 1))
    s_log = np.log(np.clip(student.predict(x, verbose=0), 1e-7, 1))
    soft_t = tf.nn.softmax(t_log / temperature).numpy()
    return float((soft_t * (tf.nn.log_softmax(t_log / temperature).numpy()
                            - tf.nn.log_softmax(s_log / temperature).numpy())).sum(1).mean())


def test_distill_lowers_the_students_kl_to_a_fixed_teacher_and_caches_its_outputs():
    x, y = _data()
    keras.utils.set_random_seed(1)
    teacher = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    tftransfer.unfreeze(teacher)
    teacher.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=5, verbose=0)
    frozen_teacher = [w.numpy().copy() for w in teacher.weights]
    student = tftransfer.build_classifier("FashionCNN", 2, weights=None, dropout_rate=0.0)
    before = _kl_to_teacher(teacher, student, x, 4.0)
    ordered = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # fixed order
    result = tftransfer.distill(teacher, student, ordered, alpha=1.0, temperature=4.0,
                                head_epochs=0, fine_tune_epochs=15, unfreeze_fraction=1.0,
                                fine_tune_learning_rate=3e-3, early_stopping_patience=None,
                                verbose=0)
    after = _kl_to_teacher(teacher, result.model, x, 4.0)
    assert after < before * 0.5
    assert result.teacher_outputs_cached
    assert "accuracy" in result.history and len(result.history["loss"]) == 15
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen_teacher, teacher.weights))
    # A shuffled pipeline runs the teacher in the input pipeline instead.
    data = tftransfer.data.from_arrays(x, y)
    shuffled = tftransfer.distill(teacher, tftransfer.build_classifier("FashionCNN", 2,
                                                                       weights=None),
                                  data, head_epochs=1, fine_tune_epochs=0, verbose=0)
    assert not shuffled.teacher_outputs_cached
    # The student is a plain Keras model: it exports like any other.
    assert isinstance(result.model, keras.Model) and result.model.output_shape == (None, 2)


def test_distiller_model_trains_and_round_trips_its_config():
    x, y = _data(24)
    teacher = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    student = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    distiller = tftransfer.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and "accuracy" in history.history
    config = distiller.get_config()
    clone = tftransfer.Distiller.from_config(config)
    assert clone.temperature == 2.0 and clone.alpha == 0.5
    assert clone.student.output_shape == student.output_shape


def test_bad_distillation_input_is_named():
    teacher = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    student = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    x, y = _data(8)
    data = tftransfer.data.from_arrays(x, y)
    with pytest.raises(ValueError, match="teacher predicts 3 classes and the student 2"):
        tftransfer.distill(teacher, student, data)
    same = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    with pytest.raises(ValueError, match="temperature: expected a number > 0"):
        tftransfer.distill(teacher, same, data, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        tftransfer.Distiller(teacher, same, temperature=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        tftransfer.distill(teacher, same, data, alpha=1.5)
    with pytest.raises(ValueError, match="anchor_to_pretrained"):
        tftransfer.fit(same, data, anchor_to_pretrained=-0.1)


def test_l2sp_is_zero_at_the_start_and_lambda_times_the_squared_distance_after_a_step():
    strength = 0.05
    model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    tftransfer.unfreeze(model, blocks=1)
    anchoring.anchor_to_pretrained(model, strength)
    backbone = tftransfer.find_backbone(model)
    start = {w.path: w.numpy().copy() for w in backbone.trainable_weights}
    penalty = anchoring.anchor_penalty(model)
    assert penalty["l2_sp"] == 0.0
    head = model.get_layer("predictions").kernel.numpy()
    assert penalty["head_l2"] == pytest.approx(strength * float((head ** 2).sum()), rel=1e-5)
    x, y = _data(16)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    by_hand = strength * sum(float(((w.numpy() - start[w.path]) ** 2).sum())
                             for w in backbone.trainable_weights)
    assert by_hand > 0
    assert anchoring.anchor_penalty(model)["l2_sp"] == pytest.approx(by_hand, rel=1e-4)
    # It is a Keras regularization loss: part of model.losses, hence of the loss.
    total = sum(float(v) for v in model.losses)
    penalty = anchoring.anchor_penalty(model)
    assert total == pytest.approx(penalty["l2_sp"] + penalty["head_l2"], rel=1e-4)
    anchoring.release_anchor(model)
    assert not model.losses


def test_fit_with_anchor_logs_the_penalty_and_stays_closer_to_the_start():
    x, y = _data(48)
    data = tftransfer.data.from_arrays(x, y)

    def fine_tuned(anchor):
        keras.utils.set_random_seed(3)
        model = tftransfer.build_classifier("FashionCNN", 2)
        start = [w.numpy().copy() for w in tftransfer.find_backbone(model).weights]
        result = tftransfer.fit(model, data, head_epochs=1, fine_tune_epochs=3,
                                unfreeze_blocks=3, fine_tune_learning_rate=3e-3,
                                anchor_to_pretrained=anchor, verbose=0, seed=3)
        moved = sum(float(((w.numpy() - s) ** 2).sum())
                    for w, s in zip(tftransfer.find_backbone(model).weights, start))
        return result, moved

    anchored, moved_anchored = fine_tuned(1.0)
    free, moved_free = fine_tuned(None)
    assert moved_anchored < moved_free
    assert "l2_sp_penalty" in anchored.history and "l2_sp_penalty" not in free.history
    phases = anchored.history["phase"]
    assert all(v is None or v >= 0 for v in anchored.history["l2_sp_penalty"])
    assert phases == ["head", "fine_tune", "fine_tune", "fine_tune"]
    assert not anchored.model.losses  # the anchor comes off after fine-tuning


def _hinton_from_logits(labels, teacher_logits, student_logits, temperature, alpha):
    t = temperature
    kl = tf.reduce_sum(tf.nn.softmax(teacher_logits / t) * (
        tf.nn.log_softmax(teacher_logits / t) - tf.nn.log_softmax(student_logits / t)), -1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, student_logits)
    return alpha * t * t * kl + (1 - alpha) * ce


def _loss(labels, teacher_logits, student_logits, temperature, alpha):
    # As distill() feeds it: the teacher's log-probabilities, the student's probabilities.
    return distillation.distillation_loss(
        labels, tf.nn.log_softmax(teacher_logits), tf.nn.softmax(student_logits),
        temperature=temperature, alpha=alpha)


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (4.0, 1.0), (1.0, 0.0)])
def test_loss_is_hintons_for_a_confident_teacher_and_a_confidently_wrong_student(
        temperature, alpha):
    # Probabilities far below 1e-7: a floor there flattened the teacher's soft targets
    # and cut the wrong student's gradient (log(1e-7) is only -16).
    labels = tf.constant([1])
    teacher = tf.constant([[0.0, 25.0, 5.0, -5.0, -15.0]])
    student = tf.constant([[30.0, 0.0, 0.0, 0.0, 0.0]])
    results = []
    for function in (_loss, _hinton_from_logits):
        with tf.GradientTape() as tape:
            tape.watch(student)
            loss = function(labels, teacher, student, temperature, alpha)
        results.append((loss.numpy(), tape.gradient(loss, student).numpy()))
    (loss, gradient), (want, want_gradient) = results
    np.testing.assert_allclose(loss, want, rtol=1e-3)
    np.testing.assert_allclose(gradient, want_gradient, atol=1e-3)
    assert np.abs(gradient).max() > 0.5  # the wrong student is pushed, at alpha 0 too
