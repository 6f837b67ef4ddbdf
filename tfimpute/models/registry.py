"""Model names understood by the CLIs, and how each is built from flag values."""

from __future__ import annotations

from typing import Any, Callable

import keras

from tfimpute.errors import InvalidInputError
from tfimpute.models.base import Imputer
from tfimpute.models.baselines import PAPER_INPAINTING_ITERATIONS, DiffusionInpainter, MeanImputer
from tfimpute.models.cgan import CGAN
from tfimpute.models.dcgan import DCGAN
from tfimpute.models.misgan import MisGAN
from tfimpute.models.rbm import RBM
from tfimpute.models.realnvp import RealNVP
from tfimpute.models.vae import VAE


def _rank_from_setting(setting: str, expected_observed_units: float, hidden_units: int) -> int | None:
    """'full' -> None; 'auto' -> the paper's rule of thumb; otherwise an integer rank."""
    if setting == "full":
        return None
    if setting == "auto":  # Section 3: rank = expected number of observed visible units.
        return max(1, min(hidden_units, int(round(expected_observed_units))))
    try:
        return int(setting)
    except ValueError:
        raise InvalidInputError(f"--rank must be 'full', 'auto' or an integer, got {setting!r}") from None


def _build_rbm(linearized: bool) -> Callable[[dict[str, Any]], Imputer]:
    def build(settings: dict[str, Any]) -> Imputer:
        rank = _rank_from_setting(settings["rank"], settings["expected_observed_units"],
                                  settings["hidden_units"])
        try:
            return RBM(hidden_units=settings["hidden_units"], linearized=linearized, rank=rank,
                       impute_mode=settings["impute_mode"], seed=settings["seed"],
                       name="lmrbm" if linearized else "rbm")
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    return build


def _build_from_settings(cls: type[Imputer], arguments: dict[str, str],
                         name: str) -> Callable[[dict[str, Any]], Imputer]:
    """Builder passing ``settings[key]`` as argument ``arguments[key]`` (absent or None: the default)."""
    def build(settings: dict[str, Any]) -> Imputer:
        try:
            return cls(name=name, **{arg: settings[key] for key, arg in arguments.items()
                                     if settings.get(key) is not None})
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    return build


VAE_ARGUMENTS = {"latent_dim": "latent_dim", "vae_hidden_units": "hidden_units",
                 "vae_impute_mode": "impute_mode", "vae_impute_samples": "impute_samples",
                 "vae_gibbs_steps": "gibbs_steps", "seed": "seed"}
REALNVP_ARGUMENTS = {"coupling_layers": "coupling_layers", "coupling_hidden_units": "hidden_units",
                     "coupling_hidden_layers": "hidden_layers", "flow_impute_steps": "impute_steps",
                     "flow_impute_step_size": "impute_step_size",
                     "flow_train_fill_steps": "train_fill_steps", "seed": "seed"}
MISGAN_ARGUMENTS = {"latent_size": "latent_size", "gan_width": "width", "imputer_units": "imputer_units",
                    "misgan_tau": "tau", "misgan_alpha": "alpha", "misgan_beta": "beta",
                    "misgan_gamma": "gamma", "gradient_penalty": "penalty_weight",
                    "critic_steps": "critic_steps", "learning_rate": "learning_rate",
                    "imputer_learning_rate": "imputer_learning_rate", "seed": "seed"}
DCGAN_ARGUMENTS = {"latent_size": "latent_size", "gan_width": "width", "learning_rate": "learning_rate",
                   "search_steps": "search_steps", "search_restarts": "search_restarts",
                   "search_weight": "search_weight", "search_learning_rate": "search_learning_rate",
                   "search_temperature": "search_temperature", "seed": "seed"}

BUILDERS: dict[str, Callable[[dict[str, Any]], Imputer]] = {
    "lmrbm": _build_rbm(linearized=True),
    "rbm": _build_rbm(linearized=False),
    "mean": lambda settings: MeanImputer(name="mean"),
    "inpaint": lambda settings: DiffusionInpainter(iterations=PAPER_INPAINTING_ITERATIONS, name="inpaint"),
    "vae": _build_from_settings(VAE, VAE_ARGUMENTS, "vae"),
    "realnvp": _build_from_settings(RealNVP, REALNVP_ARGUMENTS, "realnvp"),
    "misgan": _build_from_settings(MisGAN, MISGAN_ARGUMENTS, "misgan"),
    "dcgan": _build_from_settings(DCGAN, DCGAN_ARGUMENTS, "dcgan"),
    "cgan": _build_from_settings(CGAN, DCGAN_ARGUMENTS, "cgan"),
}
CLASSES: dict[str, type[Imputer]] = {"lmrbm": RBM, "rbm": RBM, "mean": MeanImputer,
                                     "inpaint": DiffusionInpainter, "vae": VAE,
                                     "realnvp": RealNVP, "misgan": MisGAN, "dcgan": DCGAN, "cgan": CGAN}
# Models that train on complete digits unless --missingness is given (then: AmbientGAN training).
COMPLETE_DATA_BY_DEFAULT = frozenset({"dcgan", "cgan"})
# The optimizer a model gets without --optimizer: the seed's Adam for the VAE and RealNVP; SGD for
# the rest (the paper's RBM training; untrained imputers; the GANs build their own).
DEFAULT_OPTIMIZERS = {"vae": "adam", "realnvp": "adam"}
# The learning rate without --learning_rate: the paper's 1e-4 (RBMs; MisGAN's too), Adam's usual
# 1e-3 for the VAE and RealNVP, DCGAN's 2e-4 (seed 001 §4) for DCGAN and CGAN.
PAPER_LEARNING_RATE = 1e-4
DEFAULT_LEARNING_RATES = {"vae": 1e-3, "realnvp": 1e-3, "dcgan": 2e-4, "cgan": 2e-4}


def check_model_name(name: str) -> None:
    if name not in BUILDERS:
        raise InvalidInputError(f"unknown model {name!r}; choose one of {', '.join(sorted(BUILDERS))}")


def learning_rate(name: str, settings: dict[str, Any]) -> float:
    """``settings["learning_rate"]`` when given, else model ``name``'s default (:data:`DEFAULT_LEARNING_RATES`)."""
    given = settings.get("learning_rate")
    return given if given is not None else DEFAULT_LEARNING_RATES.get(name, PAPER_LEARNING_RATE)


def build_model(name: str, settings: dict[str, Any]) -> Imputer:
    """A fresh model for ``name`` configured from flag values."""
    check_model_name(name)
    return BUILDERS[name](dict(settings, learning_rate=learning_rate(name, settings)))


def optimizer_name(name: str, settings: dict[str, Any]) -> str:
    """``settings["optimizer"]`` when given, else model ``name``'s default (:data:`DEFAULT_OPTIMIZERS`)."""
    return settings.get("optimizer") or DEFAULT_OPTIMIZERS.get(name, "sgd")


def model_from_config(name: str, config: dict[str, Any]) -> Imputer:
    """Rebuilds a model from the ``get_config()`` stored in a workdir."""
    check_model_name(name)
    return CLASSES[name].from_config(config)


def make_optimizer(name: str, settings: dict[str, Any]) -> keras.optimizers.Optimizer:
    """The optimizer :func:`optimizer_name` picks: Adam, or plain SGD (paper: lr 1e-4, no momentum)."""
    rate = learning_rate(name, settings)
    if optimizer_name(name, settings) == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.SGD(learning_rate=rate, momentum=settings["momentum"])
