"""Model names understood by the CLIs, and how each is built from flag values."""

from __future__ import annotations

from typing import Any, Callable

import keras

from tfimpute.errors import InvalidInputError
from tfimpute.models.base import Imputer
from tfimpute.models.rbm import RBM


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


BUILDERS: dict[str, Callable[[dict[str, Any]], Imputer]] = {
    "lmrbm": _build_rbm(linearized=True),
    "rbm": _build_rbm(linearized=False),
}
CLASSES: dict[str, type[Imputer]] = {"lmrbm": RBM, "rbm": RBM}


def check_model_name(name: str) -> None:
    if name not in BUILDERS:
        raise InvalidInputError(f"unknown model {name!r}; choose one of {', '.join(sorted(BUILDERS))}")


def build_model(name: str, settings: dict[str, Any]) -> Imputer:
    """A fresh model for ``name`` configured from flag values."""
    check_model_name(name)
    return BUILDERS[name](settings)


def model_from_config(name: str, config: dict[str, Any]) -> Imputer:
    """Rebuilds a model from the ``get_config()`` stored in a workdir."""
    check_model_name(name)
    return CLASSES[name].from_config(config)


def make_optimizer(settings: dict[str, Any]) -> keras.optimizers.Optimizer:
    """Plain SGD by default (paper: lr 1e-4, no momentum)."""
    return keras.optimizers.SGD(learning_rate=settings["learning_rate"], momentum=settings["momentum"])
