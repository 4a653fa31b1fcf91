"""What the weight tests share: peers with calibrated random weights, state dicts in each source's
naming built from our own parameter shapes (no peer needed), and a Hugging Face cache laid out offline.

Each peer gets random weights whose BatchNorm statistics are calibrated: gamma, beta and biases are
drawn first, then one training-mode pass with momentum 0 sets every moving mean and variance to the
statistics of its actual input. The statistics are thus far from (0, 1), so mis-mapping them shows,
and the network stays well conditioned, so 1e-4 on the logits is a real bound (uncalibrated random
statistics make the logits either nearly input-independent or explode layer after layer). The
comparison runs on the calibration images, where eval mode reproduces the calibrated activations.

Keras runs on raw [0, 255] pixels through its own front-end, set to the ImageNet mean and the std
*squared* (a `weights=None` model lacks the compensating layer of the released ones); our model runs
on the same pixels normalised as our input pipeline does. timm's models and ours both run on the
pixels normalised as the variant's family expects (`scaling.BASELINES`: ImageNet's statistics for B0,
`(x - 127) / 128` for Lite and EdgeTPU).
"""

import functools
import os

import jax
import numpy as np
import pytest

from efficientnet_jax import create_model, pretrained, scaling
from efficientnet_jax.normalizations import IMAGENET_MEAN, IMAGENET_STD

TOLERANCE = 1e-4
# timm's names of the EdgeTPU ports; the other variants are tf_efficientnet_<short name>.
TIMM_EDGETPU_NAMES = {
    "edgetpu-s": "tf_efficientnet_es",
    "edgetpu-m": "tf_efficientnet_em",
    "edgetpu-l": "tf_efficientnet_el",
}


def timm_name(variant: str) -> str:
    return TIMM_EDGETPU_NAMES.get(variant, f"tf_efficientnet_{variant}")


def normalise(pixels: np.ndarray, variant: str = "b0") -> np.ndarray:
    """Our model's input: [0, 255] RGB pixels normalised as the variant's weights expect (ImageNet
    mean/std for B0-B7, as our input pipeline does)."""
    normalization = scaling.get_baseline(scaling.variant_coefficients(variant).baseline).normalization
    return ((pixels - np.asarray(normalization.mean)) / np.asarray(normalization.std)).astype(np.float32)


def random_pixels(seed: int, count: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@functools.cache
def inference(variant: str):
    """Jitted once per variant: tests that run a model twice compile it once."""
    model = create_model(variant)
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False))


def our_logits(variables, variant: str, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(inference(variant)(variables, normalise(pixels, variant)))


def max_difference(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def assert_same_variables(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def import_keras():
    """Keras on TensorFlow: the calibration relies on eager training-mode calls updating statistics."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras runs on {keras.backend.backend()}; these tests need its TensorFlow backend.")
    return keras


def calibrated_keras_model(variant: str, pixels: np.ndarray):
    """Keras `EfficientNet{B0..}` with random weights, an ImageNet front-end, calibrated statistics."""
    keras = import_keras()
    keras.utils.set_random_seed(0)
    size = pixels.shape[1]
    model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, classifier_activation=None, input_shape=(size, size, 3)
    )
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            count = layer.get_weights()[2]
            layer.set_weights([np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD) ** 2, count])
            layer.finalize_state()  # set_weights alone leaves the layer computing with its old statistics
        elif isinstance(layer, keras.layers.BatchNormalization):
            _, _, mean, variance = layer.get_weights()
            gamma, beta = rng.uniform(0.5, 1.5, mean.shape), rng.normal(0, 0.2, mean.shape)
            layer.set_weights([gamma, beta, mean, variance])
            layer.momentum = 0.0
        elif isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        elif layer.name.endswith(("se_reduce", "se_expand", "predictions")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    model(pixels, training=True)
    return model


def keras_network_tensors(model) -> dict:
    """The model's tensors as `from_keras` names them, without the input front-end."""
    tensors, _ = pretrained.read_keras(model)
    return {key: value for key, value in tensors.items() if not key.startswith("normalization")}


def calibrate_torch_model(model, images):
    """Random batch-norm gammas and betas and conv/linear biases, then one training-mode pass over
    `images` with momentum 1 (running = batch statistics); the model in eval mode."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.momentum = 1.0
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.normal_(0, 0.2)
        model.train()
        model(images)
    return model.eval()


def calibrated_timm_model(variant: str, pixels: np.ndarray):
    """timm's model of `variant` with random weights and calibrated statistics, on the pixels
    normalised as the variant expects."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(timm_name(variant), pretrained=False)
    return calibrate_torch_model(model, torch_images(pixels, variant))


def torch_images(pixels: np.ndarray, variant: str):
    """The pixels normalised for `variant`, NCHW, as a torch tensor."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(normalise(pixels, variant).transpose(0, 3, 1, 2))


def torch_layout_of(kind: str, leaf: str, array: np.ndarray) -> np.ndarray:
    """Our array in torch's layout: the inverse of `pretrained.timm_layout`. Contiguous, as torch's
    tensors are (safetensors 0.8's numpy `save_file` writes a transposed view's memory as it lies)."""
    if leaf != "kernel":
        return array
    return np.ascontiguousarray(array.T if kind == "dense" else np.transpose(array, (3, 2, 0, 1)))


def source_state_dict(variant: str, source: pretrained.SourceFormat, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors named and laid out as `source` stores `variant`'s weights, shaped from our
    parameters (`jax.eval_shape`): what a peer's state dict holds, without the peer."""
    rng = np.random.default_rng(seed)
    shapes = pretrained.target_shapes(pretrained.canonical_variant(variant))
    return {
        key: torch_layout_of(
            layer.kind, leaf, rng.normal(size=shapes[(collection, *layer.path, leaf)][0]).astype(np.float32)
        )
        for key, (layer, collection, leaf) in source.keys(pretrained.network_layers(variant)).items()
    }


def save_safetensors(state_dict: dict[str, np.ndarray], path) -> str:
    from safetensors.numpy import save_file

    save_file(state_dict, str(path))
    return str(path)


HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo_id: str, state_dict: dict[str, np.ndarray]) -> str:
    """A huggingface_hub cache holding `model.safetensors` of `repo_id` at `refs/main`, laid out as
    huggingface_hub lays out what it downloads; returns the file."""
    repository = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repository, "snapshots", HUB_REVISION)
    os.makedirs(snapshot)
    os.makedirs(os.path.join(repository, "refs"))
    with open(os.path.join(repository, "refs", "main"), "w") as f:
        f.write(HUB_REVISION)
    return save_safetensors(state_dict, os.path.join(snapshot, pretrained.HUB_FILE))

