"""Flags and helpers shared by the command-line programs (train, bench, evaluate, export).

Importing this module quiets TensorFlow's C++ start-up logs unless the user set
TF_CPP_MIN_LOG_LEVEL; it must therefore be imported before TensorFlow by CLIs.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tfimpute import masks  # noqa: E402
from tfimpute.errors import InvalidInputError, TfImputeError  # noqa: E402

FLAGS = flags.FLAGS


def define_dataset_flags() -> None:
    """The data flags shared by every mechanism and rate (evaluate takes lists of those)."""
    flags.DEFINE_string("data_dir", None,
                        "Directory of the MNIST IDX gzip files; default: $TFIMPUTE_DATA_DIR, else TFDS.")
    flags.DEFINE_integer("train_size", 50_000, "Number of training digits (paper: the first 50,000).")
    flags.DEFINE_integer("test_size", 10_000, "Number of test digits (paper: all 10,000).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of the training masks (test masks use mask_seed + 1).")
    flags.DEFINE_integer("num_patches", masks.DEFAULT_NUM_PATCHES, "Rectangles per image for --missingness=patch.")


def define_data_flags() -> None:
    define_dataset_flags()
    flags.DEFINE_enum("missingness", "independent", ["independent", "square", "patch"],
                      "Missingness mechanism: I.M., S.O. or P.M. (see tfimpute/masks.py).")
    flags.DEFINE_float("missing_rate", 0.6, "Missing rate in (0, 1).")
    flags.DEFINE_boolean("binarize", False, "Threshold every digit's pixels at 0.5 (binarised MNIST).")
    flags.DEFINE_boolean("complete_training_data", False,
                         "Train on complete digits (nothing missing); the test digits are still masked "
                         "by --missingness / --missing_rate for the imputation RMSE. dcgan and cgan "
                         "default to complete digits unless --missingness is given.")


def define_model_flags() -> None:
    flags.DEFINE_string("model", "lmrbm", "Model name (lmrbm, rbm, misgan, dcgan, cgan, vae, realnvp, mean, inpaint; "
                        "tfimpute.train also takes mnist_classifier).")
    define_hyperparameter_flags()


def define_hyperparameter_flags() -> None:
    """Every flag :func:`model_settings` reads (evaluate trains missing cells with them)."""
    flags.DEFINE_integer("hidden_units", 4096, "RBM hidden units (paper: 4096).")
    flags.DEFINE_string("rank", "full",
                        "RBM weight rank: 'full', 'auto' (expected number of observed pixels, the "
                        "paper's rule of thumb) or an integer.")
    flags.DEFINE_enum("impute_mode", "mean_field", ["mean_field", "sample"],
                      "RBM imputation: probabilities throughout, or a sampled hidden layer.")
    flags.DEFINE_integer("batch_size", 128, "Minibatch size (paper: 128).")
    flags.DEFINE_float("learning_rate", None, "Learning rate; default: the model's own (RBMs 1e-4 on "
                       "batch-summed updates as the paper, VAE/RealNVP 1e-3, MisGAN 1e-4, DCGAN/CGAN 2e-4).")
    flags.DEFINE_float("momentum", 0.0, "SGD momentum (paper: none).")
    flags.DEFINE_enum("optimizer", None, ["sgd", "adam"], "Optimizer; default: adam for vae/realnvp, else sgd.")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and training draws.")
    define_likelihood_model_flags()
    define_gan_flags()


def define_gan_flags() -> None:
    """Flags of the GANs (MisGAN defaults: its paper's footnote-1 settings)."""
    flags.DEFINE_integer("latent_size", None, "GAN latent vector size; default: the model's own "
                         "(MisGAN 128, DCGAN/CGAN 100).")
    flags.DEFINE_integer("gan_width", None, "Channels of the first discriminator/critic convolution; "
                         "default: the model's own (MisGAN 64, DCGAN/CGAN 32).")
    flags.DEFINE_integer("imputer_units", 784, "Units in each of MisGAN's three imputer layers.")
    flags.DEFINE_float("misgan_tau", 0.0, "MisGAN τ: value given to missing pixels seen by the critic.")
    flags.DEFINE_float("misgan_alpha", 0.1, "MisGAN α: weight of the data loss in the mask generator's.")
    flags.DEFINE_float("misgan_beta", 0.1, "MisGAN β: weight of the imputer game in the data generator's.")
    flags.DEFINE_float("misgan_gamma", 0.0, "MisGAN γ: weight of the imputer's observed-pixel loss.")
    flags.DEFINE_float("gradient_penalty", 10.0, "WGAN-GP gradient penalty weight λ.")
    flags.DEFINE_integer("critic_steps", 5, "Critic updates per generator update.")
    flags.DEFINE_float("imputer_learning_rate", 2e-4, "MisGAN imputer and imputer-critic learning rate.")
    flags.DEFINE_integer("search_steps", 100, "DCGAN/CGAN imputation: Adam steps of the latent search (eq. 5.13).")
    flags.DEFINE_integer("search_restarts", 16, "DCGAN/CGAN imputation: starting latents per digit (see "
                         "--search_temperature for how their results are combined).")
    flags.DEFINE_float("search_weight", 0.003, "DCGAN/CGAN imputation: λ, weight of log(1 − D(G(z))) in eq. 5.13.")
    flags.DEFINE_float("search_learning_rate", 0.05, "DCGAN/CGAN imputation: Adam step size on z.")
    flags.DEFINE_float("search_temperature", 0.0,
                       "DCGAN/CGAN imputation: 0 fills a digit from its lowest-loss restart (eq. 5.13, "
                       "sharp); T > 0 averages the restarts weighted by softmax(−loss / T) (lower RMSE, "
                       "blurrier). The search flags may change on a trained workdir.")


def define_likelihood_model_flags() -> None:
    """Flags of the VAE and RealNVP (seed 002, sections 1 and 3)."""
    flags.DEFINE_integer("latent_dim", 20, "VAE latent dimensions (seed: 20; 2 for the manifold plot).")
    flags.DEFINE_list("vae_hidden_units", ["512", "512"],
                      "VAE encoder hidden layer widths (the decoder mirrors them).")
    flags.DEFINE_enum("vae_impute_mode", "importance", ["importance", "pseudo_gibbs"],
                      "VAE imputation: self-normalised importance sampling (MIWAE) or pseudo-Gibbs.")
    flags.DEFINE_integer("vae_impute_samples", 100, "VAE importance samples per digit for imputation.")
    flags.DEFINE_integer("vae_gibbs_steps", 10, "VAE pseudo-Gibbs iterations for imputation.")
    flags.DEFINE_integer("coupling_layers", 8, "RealNVP affine coupling layers.")
    flags.DEFINE_integer("coupling_hidden_units", 1024,
                         "Width of the hidden layers of each RealNVP coupling network.")
    flags.DEFINE_integer("coupling_hidden_layers", 2, "Hidden layers of each RealNVP coupling network.")
    flags.DEFINE_integer("flow_impute_steps", 100,
                         "RealNVP imputation: gradient-ascent steps on log p over the missing pixels.")
    flags.DEFINE_float("flow_impute_step_size", 0.05, "RealNVP imputation: Adam step size (logit units).")
    flags.DEFINE_integer("flow_train_fill_steps", 10,
                         "RealNVP on incomplete data: ascent steps that fill a batch's missing pixels "
                         "with the model's own MAP imputation before each update.")


def model_settings() -> dict[str, Any]:
    """The flag values model builders read."""
    return {"hidden_units": FLAGS.hidden_units, "rank": FLAGS.rank, "impute_mode": FLAGS.impute_mode,
            "seed": FLAGS.seed, "learning_rate": FLAGS.learning_rate, "momentum": FLAGS.momentum,
            "optimizer": FLAGS.optimizer, "latent_dim": FLAGS.latent_dim,
            "vae_hidden_units": list(FLAGS.vae_hidden_units),
            "vae_impute_mode": FLAGS.vae_impute_mode, "vae_impute_samples": FLAGS.vae_impute_samples,
            "vae_gibbs_steps": FLAGS.vae_gibbs_steps, "coupling_layers": FLAGS.coupling_layers,
            "coupling_hidden_units": FLAGS.coupling_hidden_units,
            "coupling_hidden_layers": FLAGS.coupling_hidden_layers,
            "flow_impute_steps": FLAGS.flow_impute_steps,
            "flow_impute_step_size": FLAGS.flow_impute_step_size,
            "flow_train_fill_steps": FLAGS.flow_train_fill_steps,
            "latent_size": FLAGS.latent_size, "gan_width": FLAGS.gan_width,
            "imputer_units": FLAGS.imputer_units, "misgan_tau": FLAGS.misgan_tau,
            "misgan_alpha": FLAGS.misgan_alpha, "misgan_beta": FLAGS.misgan_beta,
            "misgan_gamma": FLAGS.misgan_gamma, "gradient_penalty": FLAGS.gradient_penalty,
            "critic_steps": FLAGS.critic_steps, "imputer_learning_rate": FLAGS.imputer_learning_rate,
            "search_steps": FLAGS.search_steps, "search_restarts": FLAGS.search_restarts,
            "search_weight": FLAGS.search_weight, "search_learning_rate": FLAGS.search_learning_rate,
            "search_temperature": FLAGS.search_temperature}


def quiet_logs() -> None:
    """Keeps absl INFO chatter (e.g. checkpoint sharding) out of the progress output."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def run_main(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Wraps an absl main so that user errors print one line and exit with status 2."""

    def wrapped(argv: list[str]) -> Any:
        quiet_logs()
        try:
            if len(argv) > 1:
                raise InvalidInputError(f"unexpected arguments: {' '.join(argv[1:])}")
            return main(argv)
        except TfImputeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
