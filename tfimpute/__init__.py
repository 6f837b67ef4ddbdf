"""tfimpute: learning from incomplete data with TensorFlow/Keras.

Mask convention (everywhere in this package): ``mask == 1`` marks an OBSERVED
pixel and ``mask == 0`` a MISSING one. The LM-RBM paper's Algorithm 1 uses the
opposite convention (m = 1 marks a missing unit); the RBM module converts at its
edge and says so. Models see float32 values in [0, 1] shaped like the data: images
[batch, H, W, C] or vectors [batch, D] (tables, min-max scaled; see :mod:`tfimpute.datasets`).
"""

__version__ = "0.1.0"
