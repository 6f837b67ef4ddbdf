"""The model zoo. Importing this package registers every model (:mod:`tfimpute.models.registry`).

A new model is one module here, registered by ``@register_model``, plus one import line below.
"""

from tfimpute.models import baselines, cgan, dcgan, misgan, rbm, realnvp, vae  # noqa: F401  (registration)
