"""What every scaling experiment shares: the training job each run scales (`config.train`, a full
train.py config) and how the runs are named, rounded and compared (`config.sweep`).

`grid_search.py`, `compound.py` and `single_dimension.py` add their own sweep fields. Their
`get_config` argument is `key=value` pairs: `base=quickstart|imagenet|imagenet_v2` (the offline
digits proxy, ImageNet with the reference recipe at B0's 224 pixels, or with EfficientNetV2-B0's
settings at its 224-pixel evaluation size) and `baseline=` a key of `scaling.BASELINES`
(`efficientnet-b0`, `mobilenetv2`, `efficientnetv2-base`, ...: the network scaled,
`config.train.model.baseline`; by default the base config's own, B0's or V2-B0's), plus the file's
own keys. On ImageNet the runs take the baseline's batch-norm momentum (0.99; EfficientNetV2: 0.9).

    python sweep.py --config=configs/scaling/compound.py:base=imagenet_v2,phi=1 --workdir=/runs/v2_phi1
"""


import ml_collections

from configs import imagenet, quickstart
from efficientnet_jax import scaling

# The offline proxy trains each run for this many epochs of the 1,437 digits (about 220 steps):
# enough to rank the runs, short enough for a grid on a laptop CPU. Over so few steps the reference's
# batch-norm momentum of 0.99 leaves the moving statistics dominated by the first, very different
# steps, and the held-out top-1 drops to chance with them (BENCHMARKS.md, "Quick-start ablations").
# 0.9 follows the network.
QUICKSTART_PROXY_EPOCHS = 10.0
QUICKSTART_PROXY_BATCH_NORM_MOMENTUM = 0.9

# base name -> (train.py config file the runs' commands start from, its config, resolution divisor).
# Resolutions round to multiples of 8 at ImageNet sizes (as compound_coefficients does), of 4 at the
# proxy's 32 pixels, where 8 would merge most of the grid's gammas.
BASES = {
    "quickstart": ("configs/quickstart.py", quickstart.get_config, 4),
    "imagenet": ("configs/imagenet.py:b0", lambda: imagenet.get_config("b0"), 8),
    "imagenet_v2": ("configs/imagenet.py:v2-b0", lambda: imagenet.get_config("v2-b0"), 8),
}


def parse_arg(arg: str | None, defaults: dict) -> dict:
    """'phi=2,alpha=1.2' -> {'phi': 2.0, 'alpha': 1.2, ...the other defaults}: a number where the
    default is a number, else the text; an unknown key is an error naming the valid ones."""
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or key not in defaults:
            raise ValueError(
                f"Config argument {item!r} is not key=value with a key among {', '.join(defaults)}."
            )
        values[key] = as_float(key, text) if isinstance(defaults[key], float) else text.strip()
    return values


def as_float(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError as error:
        raise ValueError(f"Config argument {key}={text!r} is not a number.") from error


def get_config(method: str, base: str, baseline: str) -> ml_collections.ConfigDict:
    if base not in BASES:
        raise ValueError(f"Unknown base {base!r}: choose one of {', '.join(BASES)}.")
    base_config, train_config, resolution_divisor = BASES[base]
    config = ml_collections.ConfigDict()
    config.sweep = ml_collections.ConfigDict()
    config.sweep.method = method
    config.sweep.base_config = base_config  # the train.py --config each run's command starts from
    config.sweep.resolution_divisor = resolution_divisor
    config.sweep.metric = "eval_ema_top1"  # what the report ranks runs by (EMA weights, as the reference)

    config.train = train_config()
    baseline = baseline or scaling.variant_coefficients(config.train.model.variant).baseline
    config.train.model.baseline = baseline
    if base != "quickstart" and baseline in scaling.BASELINES:  # an unknown one: validate_sweep names it
        config.train.model.batch_norm_momentum = scaling.BASELINES[baseline].batch_norm_momentum
    if base == "quickstart":
        config.train.num_epochs = QUICKSTART_PROXY_EPOCHS
        config.train.model.batch_norm_momentum = QUICKSTART_PROXY_BATCH_NORM_MOMENTUM
        config.train.eval_every_steps = 10_000  # evaluate once, at the end
        config.train.checkpoint_every_steps = 100
    return config
