"""The ``config.json`` of a training workdir: what was trained, so runs resume and export safely."""

from __future__ import annotations

import json
import os
from typing import Any

from tfimpute.errors import WorkdirError
from tfimpute.training import write_json_atomically

CONFIG_FILE = "config.json"


def read_config(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
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


def load_trained(workdir: str):
    """Rebuilds the model trained in ``workdir`` from its config and latest checkpoint."""
    import tensorflow as tf

    from tfimpute.models import registry

    config = read_config(workdir)
    if config is None:
        raise WorkdirError(f"{workdir}: no {CONFIG_FILE}; is this a tfimpute training workdir?")
    model = registry.model_from_config(config["model"], config["model_config"])
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if latest is None:
        # Training checkpoints every model, untrained imputers once prepared: without a checkpoint,
        # a model with variables would come back with its initial values (e.g. all-zero means).
        if model.trainable_imputer or model.variables:
            raise WorkdirError(f"{workdir}: no checkpoint yet; train it first")
        return model, config
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, config
