"""Serving exported imputers: a TF Serving-compatible development server and a client.

* :mod:`tfimpute.serving.server` — a development server that speaks TensorFlow
  Serving's REST and gRPC wire contract (``/v1/models/...``, ``PredictionService``
  and ``ModelService`` from ``tensorflow-serving-api``) for tests and machines
  without TF Serving. It is not TF Serving: production serves the same exports
  with the ``tensorflow/serving`` Docker image (see ``serving/README.md``).
* :mod:`tfimpute.serving.client` — REST and gRPC clients (library and CLI) that
  work against either server.
* :mod:`tfimpute.serving.bench` — latency and throughput of imputation requests.
* :mod:`tfimpute.serving.status` — ``ServingError``, the status-coded error both sides raise.
"""
