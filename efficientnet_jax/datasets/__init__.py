"""Custom TFDS datasets; importing this package registers them with TFDS."""

from efficientnet_jax.datasets import sklearn_digits  # noqa: F401  (registers)
