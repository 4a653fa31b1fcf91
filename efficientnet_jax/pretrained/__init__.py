"""Import ImageNet weights released for other frameworks into our `{"params", "batch_stats"}`.

Three naming schemes, all of ports of the official TensorFlow checkpoints, one module each:

* `state_dicts`: timm's `tf_efficientnet_b0` .. `b8`, `l2`, `tf_efficientnet_lite0` .. `lite4`,
  `tf_efficientnet_es` / `em` / `el` and `tf_efficientnetv2_b0` .. `b3`, `s`, `m`, `l`, `xl`
  (`from_timm`), and the `efficientnet_pytorch` / `efficientnet-lite-pytorch` packages' B0 .. B8 and
  Lite0 .. Lite4 (`from_efficientnet_pytorch`): torch state dicts, `.safetensors` or `.pth` files;
* `keras_files`: Keras applications' `EfficientNetB0` .. `B7` and `EfficientNetV2B0` .. `B3`, `S`,
  `M`, `L` (`from_keras`): `.h5`, `.weights.h5` or an in-memory `keras.Model`;
* `hub`: any of them from a file or the Hugging Face hub (`import_weights`), with what the weights
  expect (`provenance.py`'s table: input normalisation, eval preprocessing).

`mapping` holds our side (the weighted layers of a variant) and the matching every source goes
through; `command` the converter, `python -m efficientnet_jax.pretrained WEIGHTS VARIANT OUT_DIR`,
which writes a checkpoint that evaluation, fine-tuning and prediction read. The names below are the
package's API.
"""

from efficientnet_jax.normalizations import IMAGENET_MEAN, IMAGENET_STD
from efficientnet_jax.pretrained.command import main, next_step, write_checkpoint
from efficientnet_jax.pretrained.hub import (
    HUB_FILE,
    HUB_PREFIX,
    SOURCES,
    ImportedWeights,
    hub_file,
    hub_tag,
    import_weights,
    is_advprop,
    weights_training,
)
from efficientnet_jax.pretrained.keras_files import (
    KERAS_NAMED,
    KERAS_POSITIONAL,
    check_keras_front_end,
    from_keras,
    keras_layout,
    keras_named_keys,
    keras_positional_keys,
    read_keras,
)
from efficientnet_jax.pretrained.mapping import (
    LEAVES,
    BlockPosition,
    Expected,
    Layer,
    PathLike,
    SourceFormat,
    Variables,
    WeightImportError,
    canonical_variant,
    classifier_classes,
    family,
    guess_variants,
    import_tensors,
    network_layers,
    target_shapes,
)
from efficientnet_jax.pretrained.state_dicts import (
    EFFICIENTNET_PYTORCH,
    TIMM,
    TORCH_SOURCES,
    efficientnet_pytorch_keys,
    from_efficientnet_pytorch,
    from_timm,
    read_state_dict,
    timm_keys,
    timm_layout,
    torch_naming,
)
from efficientnet_jax.provenance import (
    IMAGENET_21K_CLASSES,
    IN1K,
    IN21K,
    IN21K_FT_IN1K,
    TRAININGS,
    official_eval_preprocessing,
    weights_normalization,
)

__all__ = [
    "EFFICIENTNET_PYTORCH",
    "HUB_FILE",
    "HUB_PREFIX",
    "IMAGENET_21K_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IN1K",
    "IN21K",
    "IN21K_FT_IN1K",
    "KERAS_NAMED",
    "KERAS_POSITIONAL",
    "LEAVES",
    "SOURCES",
    "TIMM",
    "TORCH_SOURCES",
    "TRAININGS",
    "BlockPosition",
    "Expected",
    "ImportedWeights",
    "Layer",
    "PathLike",
    "SourceFormat",
    "Variables",
    "WeightImportError",
    "canonical_variant",
    "check_keras_front_end",
    "classifier_classes",
    "efficientnet_pytorch_keys",
    "family",
    "from_efficientnet_pytorch",
    "from_keras",
    "from_timm",
    "guess_variants",
    "hub_file",
    "hub_tag",
    "import_tensors",
    "import_weights",
    "is_advprop",
    "keras_layout",
    "keras_named_keys",
    "keras_positional_keys",
    "main",
    "network_layers",
    "next_step",
    "official_eval_preprocessing",
    "read_keras",
    "read_state_dict",
    "target_shapes",
    "timm_keys",
    "timm_layout",
    "torch_naming",
    "weights_normalization",
    "weights_training",
    "write_checkpoint",
]
