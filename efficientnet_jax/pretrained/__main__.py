"""`python -m efficientnet_jax.pretrained WEIGHTS VARIANT OUT_DIR`: the converter (command.py)."""

from efficientnet_jax.pretrained import command

command.main()
