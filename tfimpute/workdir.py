"""The ``config.json`` of a training workdir: what was trained, so runs resume and export safely.

Layout: ``{"model": name, "model_config": the model's get_config(), "data": ..., "training":
{"batch_size", "seed"}}``. Workdirs written before the models owned their settings (tfimpute
0.1) stored some settings under other names and the optimizer settings under ``training``;
:func:`read_config` upgrades them, so they load, evaluate, export and resume.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfimpute.errors import WorkdirError
from tfimpute.files import write_json_atomically
from tfimpute.models import registry

OPTIMIZER_SETTINGS = {"learning_rate": None, "momentum": 0.0, "optimizer": "sgd"}  # 0.1 defaults

CONFIG_FILE = "config.json"


def upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` in the current layout: renamed settings (the class's ``renamed_settings``) and the
    optimizer settings of 0.1's ``training`` section moved into ``model_config``."""
    if config.get("model") not in registry.names() or "model_config" not in config:
        return config  # not a model's workdir as train writes it: the checks that read it say what is wrong
    spec = registry.get(config["model"])
    model_config = spec.cls.upgraded_config(config["model_config"])
    training = dict(config.get("training", {}))
    if "learning_rate" in training:  # 0.1: {batch_size, learning_rate, momentum, seed[, optimizer]}
        for key, default in OPTIMIZER_SETTINGS.items():
            value = training.pop(key, default)
            if key in spec.fields:
                model_config.setdefault(key, value)
    upgraded_config = {**config, "model_config": model_config}
    if "training" in config:
        upgraded_config["training"] = training
    return upgraded_config


def read_config(workdir: str) -> dict[str, Any] | None:
    """The workdir's ``config.json`` in the current layout (None: there is none)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            config = json.load(f)
        return upgraded(config)
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise WorkdirError(f"{path}: unreadable ({exc})") from None


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the workdir, {new!r} now"]


def _without_model_keys(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``config`` with ``keys`` left out of its ``model_config``."""
    model_config = {k: v for k, v in config.get("model_config", {}).items() if k not in keys}
    return {**config, "model_config": model_config}


def claim(workdir: str, config: dict[str, Any], adjustable: tuple[str, ...] = ()) -> list[str]:
    """Writes ``config`` to a new workdir, or checks that an existing run matches it.

    ``adjustable`` names ``model_config`` keys that only affect inference (e.g. the
    latent search of DCGAN): when those are all that differ, ``config.json`` takes the
    new values and the run continues. Returns the descriptions of such changes.
    """
    existing = read_config(workdir)
    if existing is None:
        os.makedirs(workdir, exist_ok=True)
        write_json_atomically(os.path.join(workdir, CONFIG_FILE), config)
        return []
    fixed = _differences(_without_model_keys(existing, adjustable), _without_model_keys(config, adjustable))
    if fixed:
        raise WorkdirError(
            f"{workdir} holds a different run ({'; '.join(fixed)}); "
            "use a new --workdir or the original settings")
    differences = _differences(existing, config)  # only adjustable keys are left to differ
    if differences:
        write_json_atomically(os.path.join(workdir, CONFIG_FILE), config)
    return differences


def load_trained(workdir: str, inference_overrides: dict[str, Any] | None = None):
    """Rebuilds the model trained in ``workdir`` from its config and latest checkpoint;
    ``inference_overrides`` replace some of its inference settings (e.g. DCGAN's latent search)."""
    config = read_config(workdir)
    if config is None:
        raise WorkdirError(f"{workdir}: no {CONFIG_FILE}; is this a tfimpute training workdir?")
    spec = registry.get(config["model"])
    unknown = set(inference_overrides or {}) - set(spec.cls.inference_settings)
    if unknown:
        raise WorkdirError(f"{workdir}: {', '.join(sorted(unknown))} is not an inference setting of {spec.name}")
    try:
        model = spec.from_config({**config["model_config"], **(inference_overrides or {})})
    except ValueError as exc:
        raise WorkdirError(f"{workdir}: {exc}") from None
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if latest is None:
        # Training checkpoints every model, untrained imputers once prepared: without a checkpoint,
        # a model with variables would come back with its initial values (e.g. all-zero means).
        if model.trainable_imputer or model.variables:
            raise WorkdirError(f"{workdir}: no checkpoint yet; train it first")
        return model, config
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, config
