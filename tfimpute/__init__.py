"""tfimpute: learning from incomplete data with TensorFlow/Keras.

Mask convention (everywhere in this package): ``mask == 1`` marks an OBSERVED
pixel and ``mask == 0`` a MISSING one. The LM-RBM paper's Algorithm 1 uses the
opposite convention (m = 1 marks a missing unit); the RBM module converts at its
edge and says so. Images are float32 in [0, 1] with shape [batch, 28, 28, 1].
"""

__version__ = "0.1.0"
