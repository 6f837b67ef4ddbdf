"""DCGAN, trainable on incomplete data the AmbientGAN way, and inpainting by latent search.

* Networks: DCGAN's guidelines (seed ``001_*.txt`` §3) for images of the data's shape
  (H, W, C) (:func:`tfimpute.models.gan.dcgan_generator` / ``dcgan_discriminator``: a projection
  to ⌈H/4⌉ x ⌈W/4⌉, two stride-2 transposed convolutions, cropped to H x W; for MNIST 7 → 14 → 28);
  images only (``accepts_vectors = False``: the networks are convolutional);
  z ~ U(−1, 1)^latent_size; Adam(lr, β₁ = 0.5) for both players.
* Losses: the discriminator's cross-entropy and the non-saturating generator
  loss −log D(G(z)) (seed ``002_*.txt`` §2), both networks updated on every batch.
* Incomplete data (AmbientGAN, Bora et al. 2018): the discriminator only ever
  sees digits through masks. Real digits come masked by their own masks; each
  generated digit is masked by the mask of one real digit of the batch. G(z)
  does not depend on the real digit, so that is an exact draw from the data's
  mask distribution, and G learns the complete digits whose masked views match
  the data. With complete data the masks are all ones and this is plain DCGAN.
* Imputation (seed ``004_*.txt`` §5.1.1, eq. 5.13): for each digit y with mask
  M, minimise over z  L(z) = ‖M ⊙ G(z) − M ⊙ y‖₁ + λ·log(1 − D(G(z))) with Adam
  from ``search_restarts`` starting points, keep the restart with the lowest
  final loss, and fill the missing pixels from its G(z). The whole search is
  one ``tf.while_loop`` (exportable). Adam is written out on the latent tensor
  rather than taken from Keras because a Keras optimizer needs variables of a
  fixed shape, and a served batch has any size. A model trained on incomplete
  data scores realism as D(M ⊙ G(z)), the view its discriminator was trained on.
* Fast search (``latent_search="encoder"``, the default): an encoder E trained alongside
  the GAN to invert the generator, E(M ⊙ G(z), M) ≈ z, on generated digits under random
  masks (independent pixels, a kept rectangle, a hidden rectangle, at rates in [0, 0.95],
  on top of the batch's own masks). Its latent starts the search: restart 0 from E's
  latent, the others from E's latent plus N(0, 0.25²) noise (CGAN: the restarts try E's
  most likely classes in turn), so a few short searches replace many long ones from the
  prior. ``latent_search="published"`` is eq. 5.13's search from U(−1, 1) starts.

The model uses the package's mask convention (1 = observed).
"""

from __future__ import annotations

import time
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf

from tfimpute import precision, signatures, visualize
from tfimpute.errors import InvalidInputError
from tfimpute.masks import TrainingExamples
from tfimpute.models import gan
from tfimpute.models.base import Imputer, keep_observed
from tfimpute.models.capabilities import EpochImage, FrontierPoint
from tfimpute.models.registry import Setting, register_model, settings_of
from tfimpute.models.replicas import StepDraws

ADAM_BETA_1 = 0.5  # DCGAN (seed 001 §4): 0.9 oscillated and was unstable
SEARCH_ADAM_BETAS = (0.9, 0.999)  # Adam's defaults for the latent search
GRID_SIDE = 8
LATENT_SEARCHES = ("encoder", "published")
ENCODER_LEARNING_RATE = 1e-3  # Adam's usual rate: E is a plain regression network
ENCODER_RESTART_NOISE = 0.25  # std of the noise added to E's latent for restarts after the first
ENCODER_MAX_MISSING_RATE = 0.95


@register_model("dcgan", summary="DCGAN of seed 001, latent-search imputation (seed 004 eq. 5.13)")
class DCGAN(Imputer):
    """DCGAN with latent-search imputation. ``num_classes = 0``: unconditional (see ``CGAN``).

    ``compile()`` creates the generator's and the discriminator's Adam(``learning_rate``, β₁ = 0.5),
    or takes them as ``generator_optimizer`` / ``discriminator_optimizer``.
    """

    num_classes = 0
    accepts_vectors = False  # convolutional networks: images [H, W, C] only
    complete_training_data_by_default = True  # AmbientGAN training only when a missingness flag is given
    renamed_settings = {"width": "gan_width"}
    tiny_settings = {"latent_size": 8, "gan_width": 4, "search_steps": 1, "search_restarts": 2,
                     "encoder_search_steps": 1, "encoder_search_restarts": 2}
    inference_settings = ("search_steps", "search_restarts", "search_weight", "search_learning_rate",
                          "search_temperature", "latent_search", "encoder_search_steps",
                          "encoder_search_restarts")
    # The restarts' average weighted by softmax(−loss / T): T = 0 keeps the best restart (sharp), a
    # large T averages them (lower RMSE, blurrier).
    frontier_points = tuple(FrontierPoint(f"T={temperature:g}", {"search_temperature": temperature})
                            for temperature in (0.0, 1.0, 3.0, 10.0, 100.0))
    epoch_eval_limit = 64  # one search batch: about a minute on 2 CPU cores
    max_impute_batch = 64  # 64 digits x 16 restarts take about 200 MB during the search

    def __init__(self,
                 latent_size: Annotated[int, Setting("GAN latent vector size.")] = 100,
                 gan_width: Annotated[int, Setting("Channels of the first discriminator/critic "
                                                   "convolution.")] = 32,
                 learning_rate: Annotated[float, Setting("Adam learning rate (seed 001 §4: 2e-4).")] = 2e-4,
                 search_steps: Annotated[int, Setting("DCGAN/CGAN imputation: Adam steps of the latent "
                                                      "search (eq. 5.13).")] = 100,
                 search_restarts: Annotated[int, Setting("DCGAN/CGAN imputation: starting latents per digit "
                                                         "(see --search_temperature for how their results "
                                                         "are combined).")] = 16,
                 search_weight: Annotated[float, Setting("DCGAN/CGAN imputation: λ, weight of "
                                                         "log(1 − D(G(z))) in eq. 5.13.")] = 0.003,
                 search_learning_rate: Annotated[float, Setting("DCGAN/CGAN imputation: Adam step size "
                                                                "on z.")] = 0.05,
                 search_temperature: Annotated[float, Setting(
                     "DCGAN/CGAN imputation: 0 fills a digit from its lowest-loss restart (eq. 5.13, sharp); "
                     "T > 0 averages the restarts weighted by softmax(−loss / T) (lower RMSE, blurrier). "
                     "The search flags may change on a trained workdir.")] = 0.0,
                 train_encoder: Annotated[bool, Setting(
                     "DCGAN/CGAN: train an encoder that inverts the generator alongside the GAN (its "
                     "latents start --latent_search=encoder).")] = True,
                 latent_search: Annotated[str, Setting(
                     "DCGAN/CGAN imputation: 'encoder' searches from the trained encoder's latents "
                     "(--encoder_search_restarts x --encoder_search_steps); 'published' is eq. 5.13's search "
                     "from random latents (--search_restarts x --search_steps).",
                     choices=LATENT_SEARCHES)] = "encoder",
                 encoder_search_restarts: Annotated[int, Setting(
                     "DCGAN/CGAN imputation with --latent_search=encoder: restarts per digit.")] = 4,
                 encoder_search_steps: Annotated[int, Setting(
                     "DCGAN/CGAN imputation with --latent_search=encoder: Adam steps per restart.")] = 25,
                 seed: Annotated[int, Setting("Seed of initialisation, shuffling and training draws.")] = 0,
                 **kwargs):
        super().__init__(**kwargs)
        width = gan_width
        if min(latent_size, width, search_restarts) < 1 or search_steps < 0:
            raise ValueError("latent_size, width and search_restarts must be >= 1, search_steps >= 0")
        if learning_rate <= 0 or search_learning_rate <= 0 or search_weight < 0 or search_temperature < 0:
            raise ValueError("learning rates must be > 0, search_weight and search_temperature >= 0")
        if latent_search not in LATENT_SEARCHES:
            raise ValueError(f"latent_search must be one of {', '.join(LATENT_SEARCHES)}, got {latent_search!r}")
        if latent_search == "encoder" and not train_encoder:
            raise ValueError("--latent_search=encoder needs the encoder, and this model is built without one "
                             "(train_encoder=False); use --latent_search=published")
        if encoder_search_restarts < 1 or encoder_search_steps < 0:
            raise ValueError("encoder_search_restarts must be >= 1, encoder_search_steps >= 0")
        self.latent_size, self.width, self.learning_rate = latent_size, width, learning_rate
        self.search_steps, self.search_restarts = search_steps, search_restarts
        self.search_weight, self.search_learning_rate = search_weight, search_learning_rate
        self.search_temperature, self.seed = search_temperature, seed
        self.train_encoder, self.latent_search_mode = train_encoder, latent_search
        self.encoder_search_restarts, self.encoder_search_steps = encoder_search_restarts, encoder_search_steps

        height, image_width, channels = self.data_shape
        self.generator = gan.dcgan_generator(self.data_shape, latent_size + self.num_classes, width,
                                             "generator", 2 * seed)
        # CGAN's discriminator also sees the one-hot label as num_classes constant channels.
        self.discriminator = gan.dcgan_discriminator((height, image_width, channels + self.num_classes), width,
                                                     "discriminator", 2 * seed + 1)
        # E(M ⊙ x, M) -> latent (tanh, in z's support) and, for CGAN, class logits.
        self.encoder = (gan.latent_encoder(self.data_shape, latent_size + self.num_classes, width, "encoder",
                                           2 * seed + 2) if train_encoder else None)
        # 1.0 once `prepare` saw missing pixels: the discriminator then judges masked digits.
        self.trained_on_incomplete = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                                     name="trained_on_incomplete")
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_size": self.latent_size, "gan_width": self.width,
                "learning_rate": self.learning_rate,
                "search_steps": self.search_steps, "search_restarts": self.search_restarts,
                "search_weight": self.search_weight, "search_learning_rate": self.search_learning_rate,
                "search_temperature": self.search_temperature, "train_encoder": self.train_encoder,
                "latent_search": self.latent_search_mode, "encoder_search_restarts": self.encoder_search_restarts,
                "encoder_search_steps": self.encoder_search_steps, "seed": self.seed}

    @classmethod
    def upgraded_config(cls, config: dict) -> dict:
        """Workdirs written before the encoder existed have none and search as published."""
        defaults = settings_of(cls)
        return {"train_encoder": False, "latent_search": "published",
                **{name: defaults[name].default for name in ("encoder_search_restarts", "encoder_search_steps")},
                **super().upgraded_config(config)}

    def compile(self, generator_optimizer: keras.optimizers.Optimizer | None = None,
                discriminator_optimizer: keras.optimizers.Optimizer | None = None) -> None:
        """The two players' optimizers; by default Adam(``learning_rate``, β₁ = 0.5) each; and the
        encoder's Adam(1e-3) when it is trained."""
        scale = precision.loss_scale_factor(self.dtype_policy.name)
        self.generator_optimizer = generator_optimizer or keras.optimizers.Adam(
            self.learning_rate, beta_1=ADAM_BETA_1, loss_scale_factor=scale)
        self.discriminator_optimizer = discriminator_optimizer or keras.optimizers.Adam(
            self.learning_rate, beta_1=ADAM_BETA_1, loss_scale_factor=scale)
        if self.encoder is not None:
            self.encoder_optimizer = keras.optimizers.Adam(ENCODER_LEARNING_RATE, loss_scale_factor=scale)
        super().compile()

    def _networks_and_optimizers(self) -> list[tuple[keras.Model, str]]:
        pairs = [(self.generator, "generator_optimizer"), (self.discriminator, "discriminator_optimizer")]
        return pairs + ([(self.encoder, "encoder_optimizer")] if self.encoder is not None else [])

    def optimizers(self) -> list[keras.optimizers.Optimizer]:
        return [getattr(self, name) for _, name in self._networks_and_optimizers() if hasattr(self, name)]

    def build_optimizers(self) -> None:
        for network, name in self._networks_and_optimizers():
            getattr(self, name).build(network.trainable_variables)

    @property
    def training_step_counter(self) -> tf.Variable:
        return self.discriminator_optimizer.iterations

    def prepare(self, train_data: TrainingExamples) -> None:
        self.trained_on_incomplete.assign(float(train_data.missing_fraction() > 0.0))

    # -- the networks as functions ------------------------------------------------------------

    def generate(self, latent: tf.Tensor, labels: tf.Tensor | None = None,
                 training: bool = False) -> tf.Tensor:
        """Images in [0, 1], [B, H, W, C], from latents [B, latent_size] (and labels for CGAN)."""
        condition = tf.one_hot(labels, self.num_classes) if self.num_classes else None
        return self.generate_from_condition(latent, condition, training)

    def generate_from_condition(self, latent: tf.Tensor, condition: tf.Tensor | None,
                                training: bool = False) -> tf.Tensor:
        """Like :meth:`generate` with the CGAN condition as a vector [B, num_classes] (a one-hot
        label, or a mixture of two when interpolating between classes); None for DCGAN."""
        inputs = latent if condition is None else tf.concat([latent, condition], axis=-1)
        return tf.sigmoid(precision.to_float32(self.generator(inputs, training=training)))

    def interpolate(self, start: tf.Tensor, end: tf.Tensor, start_label: int | None = None,
                    end_label: int | None = None, steps: int = 9) -> tf.Tensor:
        """``steps`` digits along the straight line from latent ``start`` to ``end`` (seed 002 §2;
        DCGAN §6.1: smooth transitions mean the generator did not memorise); for CGAN the
        one-hot condition moves from ``start_label`` to ``end_label`` along with z."""
        condition = None
        if self.num_classes:
            condition = gan.straight_line(tf.one_hot(start_label, self.num_classes),
                                          tf.one_hot(end_label, self.num_classes), steps)
        return self.generate_from_condition(gan.straight_line(start, end, steps), condition)

    def discriminate(self, images: tf.Tensor, labels: tf.Tensor | None = None,
                     training: bool = False) -> tf.Tensor:
        """Logits [B] of "real"; CGAN appends the one-hot label as constant channels."""
        inputs = images
        if self.num_classes:
            planes = tf.one_hot(labels, self.num_classes)[:, None, None, :] * tf.ones_like(images[..., :1])
            inputs = tf.concat([images, planes], axis=-1)
        return tf.reshape(precision.to_float32(self.discriminator(inputs, training=training)), [-1])

    def draw_latents(self, count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(tf.stack([count, self.latent_size]), seed, -1.0, 1.0)

    # -- training -------------------------------------------------------------------------------

    def train_step(self, data):
        observed, mask, labels = data[0], data[1], data[2]
        labels = labels if self.num_classes else None
        # z for the global batch, this replica's rows: the same draws on any number of replicas.
        latent = StepDraws(self.seed, self.training_step_counter, tf.shape(observed)[0]).uniform(
            [self.latent_size], -1.0, 1.0)
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            fake = self.generate(latent, labels, training=True)
            real_logits = self.discriminate(observed * mask, labels, training=True)
            fake_logits = self.discriminate(fake * mask, labels, training=True)  # AmbientGAN
            discriminator_loss = gan.discriminator_cross_entropy(real_logits, fake_logits)
            generator_loss = gan.non_saturating_generator_loss(fake_logits)
            scaled_losses = (self.generator_optimizer.scale_loss(generator_loss),
                             self.discriminator_optimizer.scale_loss(discriminator_loss))
        for loss, tape, network, optimizer in (
                (scaled_losses[0], generator_tape, self.generator, self.generator_optimizer),
                (scaled_losses[1], discriminator_tape, self.discriminator, self.discriminator_optimizer)):
            variables = network.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        logs = {"discriminator_loss": discriminator_loss, "generator_loss": generator_loss,
                "real_probability": gan.replica_mean(tf.sigmoid(real_logits)),
                "fake_probability": gan.replica_mean(tf.sigmoid(fake_logits))}
        if self.encoder is not None:
            logs["encoder_loss"] = self.encoder_step(tf.stop_gradient(fake), latent, labels, mask)
        return logs

    def encoder_step(self, generated: tf.Tensor, latent: tf.Tensor, labels: tf.Tensor | None,
                     data_mask: tf.Tensor) -> tf.Tensor:
        """One update of E on the step's generated digits under random masks (times the batch's own
        masks): mean squared error of the latent, plus the class cross-entropy for CGAN."""
        draws = StepDraws(self.seed, self.training_step_counter, tf.shape(generated)[0], stream=1)
        mask = random_masks(draws, self.data_shape) * data_mask
        with tf.GradientTape() as tape:
            predicted, class_logits = self.encode(generated * mask, mask, training=True)
            loss = tf.reduce_mean(tf.square(predicted - latent), axis=1)
            if self.num_classes:
                loss += tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), class_logits)
            loss = gan.replica_mean(loss)
            scaled_loss = self.encoder_optimizer.scale_loss(loss)
        variables = self.encoder.trainable_variables
        self.encoder_optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
        return loss

    def encode(self, observed: tf.Tensor, mask: tf.Tensor,
               training: bool = False) -> tuple[tf.Tensor, tf.Tensor | None]:
        """E's latent [B, latent_size] in (−1, 1) for masked digits, and class logits [B, classes]
        (CGAN; None for DCGAN)."""
        outputs = precision.to_float32(self.encoder(tf.concat([observed * mask, mask], axis=-1), training=training))
        latent = tf.tanh(outputs[:, :self.latent_size])
        return latent, (outputs[:, self.latent_size:] if self.num_classes else None)

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, count: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``count`` generated digits (CGAN: of uniformly drawn classes), stateless in ``seed``."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        count = tf.cast(count, tf.int32)
        labels = None
        if self.num_classes:
            labels = tf.random.stateless_uniform(tf.reshape(count, [1]), seeds[1], 0, self.num_classes,
                                                 dtype=tf.int32)
        return self.generate(self.draw_latents(count, seeds[0]), labels)

    def sample_grid(self) -> np.ndarray:
        """8 x 8 digits from fixed latents (the same every epoch, so grids show progress)."""
        return visualize.square_grid(self.sample(GRID_SIDE * GRID_SIDE, tf.constant([0, 0])).numpy())

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]:
        """The sample grid, in TensorBoard and as ``samples_epoch_NNNN.png``."""
        return [EpochImage(self.sample_grid(), tag="samples", file=f"samples_epoch_{epoch:04d}.png", step=epoch)]

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """Latent-search imputation with seed 0 or one seed per digit, and ``sample``.

        Row i is searched from the stateless seed (seed[i], 0), which is what
        ``model.impute(images[i:i+1], mask[i:i+1], seed=seed[i])`` does; the search
        is batched (each digit's restarts depend on its own seed only).
        """

        def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
            images, mask = signatures.checked_images_and_mask(images, mask)
            seeds = signatures.per_row_seeds(tf.zeros(tf.shape(images)[:1], tf.int32))
            return {"imputed": self.latent_search(images * mask, mask, seeds)}

        def impute_seeded(images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            images, mask = signatures.checked_images_and_mask(images, mask)
            seeds = signatures.per_row_seeds(signatures.checked_seed(seed, images))
            return {"imputed": self.latent_search(images * mask, mask, seeds)}

        restarts = f"{self.search_description()}"
        return {**super().serving_signatures(),
                signatures.DEFAULT_SIGNATURE: signatures.ServingSignature(
                    signatures.image_inputs(self.data_shape), impute, f"latent search ({restarts}), seed 0"),
                "impute_sample": signatures.ServingSignature(
                    {**signatures.image_inputs(self.data_shape), **signatures.seed_input()}, impute_seeded,
                    f"latent search ({restarts}) from each digit's seed"),
                "sample": signatures.sample_signature(self.sample, ["images"],
                                                      "model.sample(1, (seed, 0)) per seed", self.data_shape)}

    @classmethod
    def benchmark_variants(cls) -> dict[str, dict]:
        """What ``tfimpute.bench --search_workdir`` compares: the fast search and the published one."""
        return {name: {"latent_search": name} for name in LATENT_SEARCHES}

    def search_size(self) -> tuple[int, int]:
        """(restarts, Adam steps) of the selected latent search."""
        if self.latent_search_mode == "encoder":
            return self.encoder_search_restarts, self.encoder_search_steps
        return self.search_restarts, self.search_steps

    def search_description(self) -> str:
        restarts, steps = self.search_size()
        start = "the encoder's latents" if self.latent_search_mode == "encoder" else "random latents"
        return f"{restarts} restarts x {steps} Adam steps from {start}"

    def extra_benchmark(self, digits: int) -> dict:
        """Seconds to impute ``digits`` images of the data's shape by latent search (60% of pixels
        missing independently; the search's cost does not depend on which), after one untimed call
        that compiles it."""
        rng = np.random.default_rng(0)
        mask = (rng.random((digits, *self.data_shape)) >= 0.6).astype(np.float32)
        images = rng.random((digits, *self.data_shape)).astype(np.float32)
        self.impute(images * mask, mask, batch_size=digits)
        started = time.perf_counter()
        self.impute(images * mask, mask, batch_size=digits)
        seconds = time.perf_counter() - started
        restarts, steps = self.search_size()
        return {"search_digits": digits, "latent_search": self.latent_search_mode, "search_restarts": restarts,
                "search_steps": steps, "search_seconds": round(seconds, 2),
                "search_ms_per_digit": round(1e3 * seconds / digits, 1)}

    # -- imputation by latent search (eq. 5.13) ------------------------------------------------

    def search_losses(self, images: tf.Tensor, targets: tf.Tensor, masks: tf.Tensor,
                      labels: tf.Tensor | None) -> tf.Tensor:
        """Eq. 5.13 per generated digit ``images`` = G(z): ‖M ⊙ (G(z) − y)‖₁ + λ·log(1 − D(G(z))), [B]."""
        contextual = tf.reduce_sum(tf.abs(masks * (images - targets)), axis=[1, 2, 3])
        seen = images * tf.where(self.trained_on_incomplete > 0.5, masks, tf.ones_like(masks))
        perceptual = -tf.nn.softplus(self.discriminate(seen, labels))  # log(1 − σ(logit))
        return contextual + self.search_weight * perceptual

    def search(self, observed: tf.Tensor, mask: tf.Tensor, row_seeds: tf.Tensor,
               labels: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the latent search from every restart: (G(z) [B, R, H, W, C], final losses [B, R]).

        The starts are E's latents (``latent_search="encoder"``, :meth:`encoder_starts`) or draws
        from the prior (``"published"``, :meth:`prior_starts`). ``row_seeds`` int32 [B, 2] seeds
        digit i's starts. Each digit's search depends on its own seed only (Adam acts element-wise
        and each latent's loss involves only its own digit), not on the batch; in floating point,
        convolutions over batches of other sizes can round differently, and a long search on a
        trained model can amplify that into another restart winning (seen on 256 digits: RMSE
        0.156 vs 0.162 at 64 vs 256 per call). For CGAN, ``labels`` [B] fixes each digit's class.
        """
        restarts, steps = self.search_size()
        guess_classes = bool(self.num_classes) and labels is None
        if self.latent_search_mode == "encoder":
            latent, restart_labels = self.encoder_starts(observed, mask, row_seeds, guess_classes)
        else:
            latent, restart_labels = self.prior_starts(row_seeds, guess_classes)
        if self.num_classes and labels is not None:
            restart_labels = tf.repeat(tf.cast(labels, tf.int32), restarts)
        batch = tf.shape(observed)[0]
        targets = tf.repeat(observed * mask, restarts, axis=0)
        masks = tf.repeat(mask, restarts, axis=0)
        beta_1, beta_2 = SEARCH_ADAM_BETAS

        def adam_step(step, latent, first_moment, second_moment):
            with tf.GradientTape() as tape:
                tape.watch(latent)
                loss = tf.reduce_sum(self.search_losses(self.generate(latent, restart_labels), targets, masks,
                                                        restart_labels))
            gradient = tape.gradient(loss, latent)
            first_moment = beta_1 * first_moment + (1.0 - beta_1) * gradient
            second_moment = beta_2 * second_moment + (1.0 - beta_2) * tf.square(gradient)
            t = tf.cast(step + 1, tf.float32)
            update = (first_moment / (1.0 - beta_1 ** t)) / (tf.sqrt(second_moment / (1.0 - beta_2 ** t)) + 1e-8)
            # z stays in the support of its U(−1, 1) prior.
            latent = tf.clip_by_value(latent - self.search_learning_rate * update, -1.0, 1.0)
            return step + 1, latent, first_moment, second_moment

        zeros = tf.zeros_like(latent)
        _, latent, _, _ = tf.while_loop(lambda step, *_: step < steps, adam_step,
                                        (tf.constant(0), latent, zeros, zeros))
        generated = self.generate(latent, restart_labels)
        losses = tf.reshape(self.search_losses(generated, targets, masks, restart_labels), [batch, restarts])
        return tf.reshape(generated, tf.concat([[batch, restarts], tf.shape(generated)[1:]], 0)), losses

    def prior_starts(self, row_seeds: tf.Tensor, guess_classes: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Eq. 5.13's starts: ``search_restarts`` latents per digit from U(−1, 1) ([B·R, latent]) and,
        with ``guess_classes`` (CGAN, no labels given), restart r of digit i tries class (r + o_i) mod K,
        o_i drawn from the digit's seed, so no class is favoured when the restarts do not divide among
        the classes (else None)."""
        restarts = self.search_restarts
        starts = tf.map_fn(
            lambda seed: self.draw_latents(tf.constant(restarts), seed), row_seeds,
            fn_output_signature=tf.TensorSpec([restarts, self.latent_size], tf.float32))
        restart_labels = None
        if guess_classes:
            offsets = tf.map_fn(
                lambda seed: tf.random.stateless_uniform(
                    [], tf.random.experimental.stateless_fold_in(seed, 1), 0, self.num_classes, tf.int32),
                row_seeds, fn_output_signature=tf.TensorSpec([], tf.int32))
            restart_labels = tf.reshape((tf.range(restarts)[None] + offsets[:, None]) % self.num_classes, [-1])
        return tf.reshape(starts, [-1, self.latent_size]), restart_labels

    def encoder_starts(self, observed: tf.Tensor, mask: tf.Tensor, row_seeds: tf.Tensor,
                       guess_classes: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The fast search's starts: restart 0 of digit i at E's latent, restart r > 0 at E's latent
        plus N(0, 0.25²) noise drawn from the digit's seed (clipped to z's support); with
        ``guess_classes`` (CGAN, no labels given), restart r tries E's (r mod K)-th most likely class
        (else None)."""
        restarts = self.encoder_search_restarts
        latent, class_logits = self.encode(observed, mask)
        noise = tf.map_fn(lambda seed: tf.random.stateless_normal([restarts, self.latent_size], seed), row_seeds,
                          fn_output_signature=tf.TensorSpec([restarts, self.latent_size], tf.float32))
        noise *= ENCODER_RESTART_NOISE * tf.cast(tf.range(restarts) > 0, tf.float32)[None, :, None]
        starts = tf.clip_by_value(latent[:, None, :] + noise, -1.0, 1.0)
        restart_labels = None
        if guess_classes:
            ranked = tf.math.top_k(class_logits, k=self.num_classes).indices
            restart_labels = tf.reshape(tf.gather(ranked, tf.range(restarts) % self.num_classes, axis=1), [-1])
        return tf.reshape(starts, [-1, self.latent_size]), restart_labels

    def latent_search(self, observed: tf.Tensor, mask: tf.Tensor, row_seeds: tf.Tensor,
                      labels: tf.Tensor | None = None) -> tf.Tensor:
        """Imputes each digit from its restarts (see :meth:`search`): the lowest-loss one (eq. 5.13),
        or with ``search_temperature`` > 0 their average weighted by softmax(−loss / temperature)."""
        generated, losses = self.search(observed, mask, row_seeds, labels)
        if self.search_temperature > 0:
            weights = tf.nn.softmax(-losses / self.search_temperature, axis=1)
            filled = tf.einsum("br,brhwc->bhwc", weights, generated)
        else:
            filled = tf.gather(generated, tf.argmin(losses, axis=1, output_type=tf.int32), batch_dims=1)
        return keep_observed(observed, mask, filled)

    @staticmethod
    def row_seeds(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """Digit i of a batch imputed with ``seed`` = (a, b) is searched from seed (a, b + i), so
        ``impute`` starts a digit's search from the same latents whatever the batching."""
        seed = tf.cast(seed, tf.int32)
        return tf.stack([tf.fill([batch], seed[0]), seed[1] + tf.range(batch)], axis=1)

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self.latent_search(images * mask, mask, self.row_seeds(seed, tf.shape(images)[0]))


def _rectangle(draws: StepDraws, side: int, fraction: tf.Tensor, longest: int) -> tf.Tensor:
    """Per example [B, side] booleans: a run of round(side · fraction) positions (at most ``longest``)
    at a uniform offset."""
    length = tf.minimum(tf.cast(tf.round(side * fraction), tf.int32), longest)  # [B]
    start = tf.cast(tf.floor(draws.uniform([]) * tf.cast(side - length + 1, tf.float32)), tf.int32)
    positions = tf.range(side)[None, :]
    return (positions >= start[:, None]) & (positions < (start + length)[:, None])


def random_masks(draws: StepDraws, data_shape: tuple[int, int, int]) -> tf.Tensor:
    """Masks [B, H, W, C] (1 = observed) for training the encoder, each example's drawn anew: one of
    independent pixels, a kept rectangle (the rest hidden) or a hidden rectangle, equally likely,
    hiding a fraction r ~ U(0, 0.95) of the pixels (all channels of a pixel together), so E sees the
    kinds of holes the test masks of :mod:`tfimpute.masks` make."""
    height, width, channels = data_shape
    rate = draws.uniform([]) * ENCODER_MAX_MISSING_RATE  # [B]
    kind = tf.cast(tf.floor(draws.uniform([]) * 3.0), tf.int32)
    independent = draws.uniform([height, width]) >= rate[:, None, None]
    kept_side = tf.sqrt(1.0 - rate)
    kept = (_rectangle(draws, height, kept_side, height)[:, :, None]
            & _rectangle(draws, width, kept_side, width)[:, None, :])
    hidden_side = tf.sqrt(rate)  # at most all rows but one: something stays observed
    hidden = (_rectangle(draws, height, hidden_side, height - 1)[:, :, None]
              & _rectangle(draws, width, hidden_side, width)[:, None, :])
    choice = kind[:, None, None]
    observed = tf.where(choice == 0, independent, tf.where(choice == 1, kept, ~hidden))
    return tf.tile(tf.cast(observed, tf.float32)[..., None], [1, 1, 1, channels])


def check_labels_known(train_data: TrainingExamples, model_name: str) -> None:
    """Class-conditional training needs every example's label."""
    if train_data.label_count() is None:
        raise InvalidInputError(f"--model={model_name} needs the labels of the training data (csv: --label_column; images: one sub-folder per class; npz: y)")
