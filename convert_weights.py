"""Converts published EfficientNet weights (timm, efficientnet_pytorch, Keras; a file or `hf-hub:<repo>`)
into a checkpoint that eval.py, predict.py and fine-tuning read, with the input normalisation and
eval preprocessing the weights expect:

    python convert_weights.py hf-hub:timm/tf_efficientnet_b0.ns_jft_in1k b0 /runs/b0_ns

The same command as `python -m efficientnet_jax.pretrained`, which an installed package runs.
"""

from efficientnet_jax.pretrained import command

if __name__ == "__main__":
    command.main(prog="convert_weights.py")
