"""The model registry, filled by the model modules themselves.

A model module declares everything about its model in one place:

* its **settings**: the constructor arguments annotated ``Annotated[T, Setting("help")]``.
  The constructor's default is the one source of that default; ``get_config`` returns
  the settings, and a program's flags come from them by one rule: **the flag of a
  setting is its name** (``--misgan_tau`` sets ``MisGAN(misgan_tau=...)``). A setting
  that several models share by name (``latent_size``, ``learning_rate``, ``seed``) is one
  flag, whose default is each model's own.
* its **registration**: ``@register_model("dcgan")`` on the class, which also registers
  it with ``keras.saving.register_keras_serializable``. One class may be registered
  under several names with fixed arguments (``lmrbm`` and ``rbm`` are the RBM with
  ``linearized=True`` / ``False``).

Constructor arguments without a ``Setting`` (the data's shape, the Keras ``name``) are
not flags. :mod:`tfimpute.models` imports every model module, so that importing it
fills this registry.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

import keras

from tfimpute.errors import InvalidInputError

KERAS_PACKAGE = "tfimpute"


@dataclasses.dataclass(frozen=True)
class Setting:
    """Marks a constructor argument as a model setting (a config field with a flag of its name)."""

    help: str
    choices: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting of one model: its name (= its flag), default and description."""

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered name: the class, the constructor arguments the name fixes, and a summary."""

    name: str
    cls: type
    fixed: dict[str, Any]
    summary: str

    @property
    def fields(self) -> dict[str, Field]:
        """The settings of the model, in constructor order (the arguments fixed by the name excluded)."""
        return {name: field for name, field in settings_of(self.cls).items() if name not in self.fixed}

    def build(self, settings: dict[str, Any] | None = None, data_shape: tuple[int, ...] | None = None):
        """A fresh model from ``settings`` (field name -> value; absent or None: the default) for
        examples of ``data_shape`` (default: the model's, MNIST's).

        A value the model refuses (e.g. ``hidden_units=0``) raises ``InvalidInputError``
        naming the flag; an image-only model refuses vectors in one line naming the models that take them.
        """
        given = {name: value for name, value in (settings or {}).items()
                 if (name in self.fields or name in self.cls.data_settings) and value is not None}
        if data_shape is not None:
            self.check_data_shape(data_shape)
            given["data_shape"] = tuple(data_shape)
        try:
            return self.cls(name=self.name, **self.fixed, **given)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def check_data_shape(self, data_shape: tuple[int, ...]) -> None:
        """Refuses vectors for an image-only model, naming the models that accept them."""
        if len(data_shape) == 1 and not self.cls.accepts_vectors:
            takers = [spec.name for spec in specs() if spec.cls.accepts_vectors]
            raise InvalidInputError(
                f"--model={self.name} works on images [H, W, C] only; the data are vectors of "
                f"{data_shape[0]} values (models for vectors: {', '.join(takers)})")

    def settings_for_data(self, settings: dict[str, Any], train_data) -> dict[str, Any]:
        """``settings`` with what depends on the training data resolved (e.g. the RBM's rank 'auto')."""
        try:
            return self.cls.settings_for_data(settings, train_data)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def from_config(self, config: dict[str, Any]):
        """The model a stored ``get_config()`` describes (older key names upgraded by the class)."""
        return self.cls.from_config(config)


_MODELS: dict[str, ModelSpec] = {}


def settings_of(cls: type) -> dict[str, Field]:
    """The ``Setting``-annotated constructor arguments of ``cls`` (its own and its parents' signature)."""
    fields = {}
    # A constructor that passes **kwargs on (CGAN's) hides its parents' arguments from its own
    # signature: every constructor in the class's ancestry is read, the nearest one winning and
    # coming first (a model's own settings before those of its parents and mixins).
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        hints = typing.get_type_hints(klass.__init__, include_extras=True)
        for parameter in inspect.signature(klass.__init__).parameters.values():
            setting = next((meta for meta in getattr(hints.get(parameter.name), "__metadata__", ())
                            if isinstance(meta, Setting)), None)
            if setting is not None and parameter.name not in fields:
                fields[parameter.name] = Field(parameter.name, parameter.default, setting.help, setting.choices)
    return fields


def register_model(name: str, *, summary: str, **fixed: Any) -> Callable[[type], type]:
    """Class decorator: registers ``cls`` as model ``name`` (constructed with ``fixed`` arguments)."""

    def register(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is registered twice")
        registered = keras.saving.get_registered_object(f"{KERAS_PACKAGE}>{cls.__name__}")
        if registered is None:
            cls = keras.saving.register_keras_serializable(package=KERAS_PACKAGE)(cls)
        elif registered is not cls:
            raise ValueError(f"another class named {cls.__name__} is registered with Keras as "
                             f"{KERAS_PACKAGE}>{cls.__name__}")
        _MODELS[name] = ModelSpec(name, cls, dict(fixed), summary)
        return cls

    return register


def names() -> list[str]:
    return sorted(_MODELS)


def get(name: str) -> ModelSpec:
    """The spec registered as ``name``; an unknown name is refused in one line listing the known ones."""
    if name not in _MODELS:
        raise InvalidInputError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return _MODELS[name]


def specs() -> list[ModelSpec]:
    return [_MODELS[name] for name in names()]
