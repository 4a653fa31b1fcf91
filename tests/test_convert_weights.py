"""The converter's command line (`pretrained/command.py`, `python -m efficientnet_jax.pretrained`):
the normalisation it writes, from the weights' name, `--advprop` or `--normalization`, and its
refusal of a mismatched `--source`.
"""


import pytest

from efficientnet_jax import normalizations, pretrained
from efficientnet_jax.pretrained import command
from tests.weight_helpers import (
    save_safetensors,
    source_state_dict,
)


def test_the_converter_writes_the_normalisation_of_the_weights_or_the_one_asked_for(
    tmp_path, monkeypatch, capsys
):
    """The command passes `write_checkpoint` the weights' normalisation: AdvProp's from an
    `adv-efficientnet-*` file name or `--advprop`, or `--normalization`'s; the file's naming is
    recognised (`--source=auto`) and a mismatched `--source` refused in one line."""
    written = []

    def record(variables, variant, out_dir, normalization=None, eval_preprocessing=None):
        written.append((variant, normalization))
        return out_dir

    monkeypatch.setattr(command, "write_checkpoint", record)  # what the command calls
    state_dict = source_state_dict("b0", pretrained.EFFICIENTNET_PYTORCH)
    advprop_file = save_safetensors(state_dict, tmp_path / "adv-efficientnet-b0-b64d5a18.safetensors")
    standard_file = save_safetensors(state_dict, tmp_path / "efficientnet-b0-355c32eb.safetensors")
    runs = [
        ([advprop_file, "b0", str(tmp_path / "a")], normalizations.SIGNED_UNIT_NORMALIZATION, "signed_unit"),
        ([standard_file, "b0", str(tmp_path / "b")], normalizations.IMAGENET_NORMALIZATION, "imagenet"),
        (
            [standard_file, "b0", str(tmp_path / "c"), "--advprop"],
            normalizations.SIGNED_UNIT_NORMALIZATION,
            "signed_unit",
        ),
        (
            [advprop_file, "b0", str(tmp_path / "d"), "--normalization=edge"],
            normalizations.EDGE_NORMALIZATION,
            "edge",
        ),
    ]
    for argv, normalization, name in runs:
        pretrained.main(argv)
        assert written.pop() == ("b0", normalization)
        assert (
            f"from efficientnet_pytorch weights ({argv[0]}), inputs normalised as {name}."
            in capsys.readouterr().out
        )
    with pytest.raises(SystemExit):
        pretrained.main([standard_file, "b0", str(tmp_path / "e"), "--source=keras"])
    assert "is not a keras weights file" in capsys.readouterr().err
    assert not written

