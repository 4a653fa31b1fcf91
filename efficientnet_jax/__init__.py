"""EfficientNet in JAX/Flax, exact to the official TensorFlow implementation."""

from efficientnet_jax.model import EfficientNet, create_model, model_spec
from efficientnet_jax.scaling import (
    EFFICIENTNET_B0_STAGES,
    VARIANTS,
    ModelSpec,
    StageSpec,
    compound_coefficients,
    round_filters,
    round_repeats,
)

__all__ = [
    "EFFICIENTNET_B0_STAGES",
    "VARIANTS",
    "EfficientNet",
    "ModelSpec",
    "StageSpec",
    "compound_coefficients",
    "create_model",
    "model_spec",
    "round_filters",
    "round_repeats",
]
