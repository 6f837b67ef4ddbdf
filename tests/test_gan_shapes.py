"""The GANs (MisGAN, DCGAN, CGAN) on data of other shapes than MNIST's: odd-sized colour images,
and vectors (tables) for MisGAN; and the MNIST networks unchanged (their checkpoints still load)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfimpute.errors import InvalidInputError
from tfimpute.models import gan, registry

IMAGE_SHAPE = (10, 14, 3)  # odd, non-square, colour: nothing divides evenly
VECTOR_SHAPE = (13,)
CASES = [("misgan", IMAGE_SHAPE), ("misgan", VECTOR_SHAPE), ("dcgan", IMAGE_SHAPE), ("cgan", IMAGE_SHAPE)]


def shaped_model(name, shape, **overrides):
    """Registered model ``name`` with its tiny settings for examples of ``shape``, compiled."""
    spec = registry.get(name)
    model = spec.cls(name=name, data_shape=shape, **spec.fixed, **{**spec.cls.tiny_settings, **overrides})
    model.compile()
    model.build_optimizers()
    return model


def data(shape, size=8, seed=0, missing=0.4):
    rng = np.random.default_rng(seed)
    images = rng.random((size, *shape)).astype(np.float32)
    mask = (rng.random((size, *shape)) >= missing).astype(np.float32)
    mask[0] = 0.0  # one example with nothing observed
    labels = rng.integers(0, 10, size).astype(np.int32)
    return images, mask, labels


# -- networks --------------------------------------------------------------------------------------

def test_mnist_networks_keep_their_layers_and_variable_shapes():
    """(28, 28, 1) builds the networks trained checkpoints hold: no crop added, same kernels."""
    generator = gan.conv_generator((28, 28, 1), 128, 64, "g", 0)
    assert [type(layer).__name__ for layer in generator.layers] == [
        "Dense", "Reshape", "Conv2DTranspose", "Cropping2D", "Conv2DTranspose", "Conv2DTranspose"]
    assert [tuple(w.shape) for w in generator.weights] == [
        (128, 4096), (4096,), (5, 5, 128, 256), (128,), (5, 5, 64, 128), (64,), (8, 8, 1, 64), (1,)]
    critic = gan.conv_critic((28, 28, 1), 64, "c", 0)
    assert [tuple(w.shape) for w in critic.weights][-2:] == [(4 * 4 * 256, 1), (1,)]
    dcgan = gan.dcgan_generator((28, 28, 1), 100, 32, "dg", 0)
    assert [type(layer).__name__ for layer in dcgan.layers][-1] == "Conv2DTranspose"
    assert tuple(dcgan.weights[0].shape) == (100, 7 * 7 * 128)
    assert tuple(dcgan.layers[-1].kernel.shape) == (5, 5, 1, 64)
    discriminator = gan.dcgan_discriminator((28, 28, 11), 32, "dd", 0)
    assert tuple(discriminator.weights[0].shape) == (5, 5, 11, 32)
    assert tuple(discriminator.layers[-1].kernel.shape) == (7 * 7 * 64, 1)
    # Seeded initialisers: the same weights every build.
    again = gan.conv_generator((28, 28, 1), 128, 64, "g", 0)
    for a, b in zip(generator.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(10, 14, 3), (1, 1, 1), (29, 5, 2), (32, 32, 3)])
def test_convolutional_networks_fit_any_image_shape(shape):
    latent = tf.random.stateless_normal([3, 5], [0, 1])
    images = tf.random.stateless_uniform([3, *shape], [0, 2])
    assert gan.conv_generator(shape, 5, 2, "g", 0)(latent).shape == (3, *shape)
    assert gan.dcgan_generator(shape, 5, 2, "dg", 0)(latent).shape == (3, *shape)
    assert gan.conv_critic(shape, 2, "c", 0)(images).shape == (3, 1)
    assert gan.dcgan_discriminator(shape, 2, "d", 0)(images).shape == (3, 1)


def test_centre_crop_takes_the_middle():
    crop = gan.centre_crop((8, 7), (5, 7))[0]
    image = np.arange(8 * 7, dtype=np.float32).reshape(1, 8, 7, 1)
    np.testing.assert_array_equal(crop(image).numpy(), image[:, 1:6])
    assert gan.centre_crop((28, 28), (28, 28)) == []


def test_gradient_penalty_on_vectors_matches_a_linear_critic():
    # D(x) = w·x + b has input gradient w: the penalty is (‖w‖ − 1)² for every example.
    critic = keras.Sequential([keras.Input((13,)), keras.layers.Dense(1)])
    w = np.random.default_rng(0).normal(0, 0.5, (13, 1)).astype(np.float32)
    critic.layers[-1].set_weights([w, np.zeros(1, np.float32)])
    real, fake = (tf.random.stateless_uniform([4, 13], [i, 0]) for i in range(2))
    eps = tf.random.stateless_uniform([4, 1], [2, 0])
    penalty = gan.gradient_penalty(critic, real, fake, eps).numpy()
    np.testing.assert_allclose(penalty, (np.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)
    assert gan.non_batch_axes(real) == [1] and gan.non_batch_axes(tf.zeros([2, 3, 4, 5])) == [1, 2, 3]


# -- models ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape", CASES)
def test_samples_have_the_data_shape(name, shape):
    model = shaped_model(name, shape)
    samples = model.sample(4, tf.constant([1, 2]))
    for tensor in samples if isinstance(samples, tuple) else (samples,):
        values = tensor.numpy()
        assert values.shape == (4, *shape)
        assert np.all((values >= 0) & (values <= 1)) and values.std() > 0
    start, end = model.draw_latents(2, tf.constant([0, 5])).numpy()
    labels = {"start_label": 2, "end_label": 7} if name == "cgan" else {}
    line = model.interpolate(tf.constant(start), tf.constant(end), steps=3, **labels).numpy()
    assert line.shape == (3, *shape)


def test_misgan_networks_follow_the_data_shape():
    images = shaped_model("misgan", IMAGE_SHAPE)
    assert images.imputer_network.weights[0].shape == (10 * 14 * 3, 16)
    assert images.imputer_network.weights[-1].shape == (10 * 14 * 3,)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in images.data_critic.layers)
    vectors = shaped_model("misgan", VECTOR_SHAPE)
    assert vectors.imputer_network.weights[0].shape == (13, 16)
    for network in (vectors.data_generator, vectors.mask_generator, vectors.data_critic, vectors.imputer_critic):
        assert all(isinstance(layer, keras.layers.Dense) for layer in network.layers)
    assert vectors.data_generator.output_shape == (None, 13) and vectors.data_critic.output_shape == (None, 1)
    # The paper's 784-unit imputer layers stay the default whatever the data's size.
    assert registry.get("misgan").cls(data_shape=VECTOR_SHAPE).imputer_units == 784


def test_misgan_gamma_loss_on_vectors():
    model = shaped_model("misgan", VECTOR_SHAPE, misgan_gamma=1.0)
    images, mask, _ = data(VECTOR_SHAPE)
    latent = model.draw_latents(len(images), tf.constant([0, 0]))
    noise = tf.random.stateless_uniform(images.shape, [0, 1])
    without = shaped_model("misgan", VECTOR_SHAPE, misgan_gamma=0.0)
    losses = model.generator_losses(tf.constant(images * mask), tf.constant(mask), latent, latent, noise)
    baseline = without.generator_losses(tf.constant(images * mask), tf.constant(mask), latent, latent, noise)
    raw = model.imputer_output(tf.constant(images * mask), tf.constant(mask), noise).numpy()
    per_example = ((raw - images * mask) ** 2 * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
    assert float(losses["imputer_loss"] - baseline["imputer_loss"]) == pytest.approx(per_example.mean(), rel=1e-4)


def test_misgan_on_vectors_serves_and_shows_no_pictures():
    model = shaped_model("misgan", VECTOR_SHAPE)
    assert model.epoch_images(1, 1) == []
    with pytest.raises(ValueError, match="images"):
        model.sample_grid()
    signatures = model.serving_signatures()
    sampled = signatures["sample"].function(seed=tf.constant([0, 1, 2]))
    assert sampled["images"].shape == sampled["masks"].shape == (3, 13)
    images, mask, _ = data(VECTOR_SHAPE, size=3)
    imputed = signatures["impute_sample"].function(images=tf.constant(images * mask), mask=tf.constant(mask),
                                                   seed=tf.constant([4, 5, 6]))["imputed"].numpy()
    for i in range(3):  # row i is model.impute of that row alone with its seed
        np.testing.assert_allclose(imputed[i], model.impute(images[i:i + 1] * mask[i:i + 1], mask[i:i + 1],
                                                            seed=4 + i)[0], rtol=1e-6, atol=1e-7)


def test_cgan_conditions_colour_images_on_the_label():
    model = shaped_model("cgan", IMAGE_SHAPE)
    assert model.discriminator.input_shape == (None, 10, 14, 3 + 10)
    images, mask, labels = data(IMAGE_SHAPE, size=4)
    logits = model.discriminate(tf.constant(images), tf.constant(labels))
    other = model.discriminate(tf.constant(images), tf.constant((labels + 1) % 10))
    assert logits.shape == (4,) and not np.allclose(logits.numpy(), other.numpy())
    zeros, ones = (model.generate_labelled(tf.fill([2], k), tf.constant([0, 0])).numpy() for k in (0, 1))
    assert zeros.shape == (2, *IMAGE_SHAPE) and not np.array_equal(zeros, ones)
    imputed = model.impute_with_labels(tf.constant(images * mask), tf.constant(mask), tf.constant(labels),
                                       tf.constant([0, 0])).numpy()
    assert imputed.shape == (4, *IMAGE_SHAPE)
    np.testing.assert_array_equal(imputed[mask == 1], images[mask == 1])
    assert model.extra_benchmark(2)["search_digits"] == 2


@pytest.mark.parametrize("name", ["dcgan", "cgan"])
def test_image_only_gans_refuse_vectors(name):
    spec = registry.get(name)
    with pytest.raises(ValueError, match=r"images \[H, W, C\] only"):
        spec.cls(name=name, data_shape=VECTOR_SHAPE, **spec.fixed, **spec.cls.tiny_settings)
    with pytest.raises(InvalidInputError, match=r"images \[H, W, C\] only"):
        spec.build(spec.cls.tiny_settings, data_shape=VECTOR_SHAPE)


def test_cgan_with_two_classes_exports(tmp_path):
    from tfimpute import masks, savedmodel

    spec = registry.get("cgan")
    train_data = masks.make_incomplete(np.random.default_rng(0).random((4, 6, 6, 1)).astype(np.float32),
                                       np.ones((4, 6, 6, 1), np.float32), np.array([0, 1, 0, 1]))
    settings = spec.settings_for_data({**spec.cls.tiny_settings}, train_data)
    assert settings["num_classes"] == 2
    model = spec.build(settings, data_shape=(6, 6, 1))
    model.compile()
    model.prepare(train_data)
    savedmodel.export_model(model, str(tmp_path), "cgan")  # probe labels are classes 0 and 1 only
