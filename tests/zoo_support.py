"""Every registered model, tiny (its class's ``tiny_settings``), for tests that run the whole zoo."""

from __future__ import annotations

from tfimpute.models import registry


def tiny_model(name: str, seed: int = 1, data_shape: tuple[int, ...] | None = None, **overrides):
    """Registered model ``name`` with its tiny settings (for examples of ``data_shape``; default
    MNIST's), compiled with its own optimizers."""
    spec = registry.get(name)
    model = spec.build({**spec.cls.tiny_settings, "seed": seed, **overrides}, data_shape=data_shape)
    model.compile()
    return model


def trainable_names() -> list[str]:
    return [spec.name for spec in registry.specs() if spec.cls.trainable_imputer]
