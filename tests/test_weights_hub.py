"""Any source from a file or the Hugging Face hub (`pretrained/hub.py`): the normalisation each
published name implies, and hub weights converted offline from a cache laid out here.
"""

import os
import subprocess
import sys

import pytest

from efficientnet_jax import checkpointing, normalizations, pretrained
from efficientnet_jax.model import model_spec
from tests.test_entry_points import REPO, assert_one_line_error
from tests.weight_helpers import (
    assert_same_variables,
    hub_cache,
    source_state_dict,
)


@pytest.mark.parametrize(
    "weights, variant, expected",
    [
        ("model.safetensors", "b0", normalizations.IMAGENET_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_b3.ns_jft_in1k", "b3", normalizations.IMAGENET_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_b3.ap_in1k", "b3", normalizations.SIGNED_UNIT_NORMALIZATION),
        ("/weights/adv-efficientnet-b8-22a8fe65.pth", "b8", normalizations.SIGNED_UNIT_NORMALIZATION),
        ("/weights/efficientnet-b7-dcc49843.pth", "b7", normalizations.IMAGENET_NORMALIZATION),
        ("tf_efficientnet_b1_ap-44ef0a3d.pth", "b1", normalizations.SIGNED_UNIT_NORMALIZATION),
        ("tf_efficientnet_b0_ns-c0e6a31c.pth", "b0", normalizations.IMAGENET_NORMALIZATION),
        ("efficientnet-lite0-57934424.pth", "lite0", normalizations.EDGE_NORMALIZATION),
        ("hf-hub:timm/tf_efficientnet_es.in1k", "edgetpu-s", normalizations.EDGE_NORMALIZATION),
        ("efficientnetb0.h5", "b0", normalizations.IMAGENET_NORMALIZATION),
    ],
)
def test_each_source_names_the_normalisation_its_weights_expect(weights, variant, expected):
    assert pretrained.weights_normalization(variant, pretrained.is_advprop(weights)) == expected


def convert(*argv, cache):
    """The converter as a user runs it, offline, with `cache` as huggingface_hub's cache."""
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "efficientnet_jax.pretrained", *argv]
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_hub_weights_convert_offline_from_the_cache(tmp_path):
    """`hf-hub:timm/tf_efficientnet_b0.ap_in1k` from the cache, no network: the checkpoint holds the
    file's weights, normalised as AdvProp's (the tag says so); a repository the cache lacks is one
    line naming the cache."""
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    repo_id = "timm/tf_efficientnet_b0.ap_in1k"
    cached_file = hub_cache(cache, repo_id, source_state_dict("b0", pretrained.TIMM))
    out_dir = tmp_path / "b0_ap"

    result = convert(f"hf-hub:{repo_id}", "b0", str(out_dir), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"from timm weights ({cached_file}), inputs normalised as signed_unit." in result.stdout
    location = checkpointing.locate_checkpoint(str(out_dir))
    restored = checkpointing.read_variables(location, model_spec("b0"), "ema")
    assert_same_variables(restored, pretrained.from_timm(cached_file, "b0"))

    missing = convert("hf-hub:timm/tf_efficientnet_b1.ap_in1k", "b1", str(tmp_path / "b1"), cache=cache)
    assert_one_line_error(
        missing, "python -m efficientnet_jax.pretrained", f"is not in the Hugging Face cache ({cache})"
    )
    assert not (tmp_path / "b1").exists()

