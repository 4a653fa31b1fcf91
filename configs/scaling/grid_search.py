"""The paper's step 1: at phi = 1, a grid over depth alpha, width beta and resolution gamma, kept to
the points with alpha * beta^2 * gamma^2 within `tolerance` (relative) of `target` = 2, each a short
proxy training run of the scaled baseline.

    python sweep.py --config=configs/scaling/grid_search.py --workdir=runs/grid
    python sweep.py --config=configs/scaling/grid_search.py:baseline=mobilenetv2,tolerance=0.03 --workdir=...
"""

import ml_collections

from configs.scaling import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"base": "quickstart", "baseline": "", "target": 2.0, "tolerance": 0.05})
    config = common.get_config("grid_search", args["base"], args["baseline"])
    # Five points satisfy the constraint: depth, width or resolution alone (2.0, 1, 1), (1, 1.4, 1),
    # (1, 1, 1.4), the paper's (1.2, 1.1, 1.15) and (1.4, 1.1, 1.1). Widen the lists for a finer search.
    config.sweep.alphas = (1.0, 1.2, 1.4, 2.0)  # depth
    config.sweep.betas = (1.0, 1.1, 1.4)  # width
    config.sweep.gammas = (1.0, 1.1, 1.15, 1.4)  # resolution
    config.sweep.target = args["target"]
    config.sweep.tolerance = args[
        "tolerance"
    ]  # relative: |alpha * beta^2 * gamma^2 / target - 1| <= tolerance
    return config
