"""Scaling one dimension at a time (the paper's Figure 3) and width at fixed depth and resolution
(its Figure 4), to compare with compound scaling.

    python sweep.py --config=configs/scaling/single_dimension.py --workdir=runs/single
    python sweep.py --config=configs/scaling/single_dimension.py --config.sweep.depth_multipliers='()' ...

The multipliers apply to the base config's width, depth and image size; the unscaled run shared by
the curves trains once. An empty list leaves that curve out.
"""

import ml_collections

from configs.scaling import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"base": "quickstart", "baseline": ""})
    config = common.get_config("single_dimension", args["base"], args["baseline"])
    config.sweep.width_multipliers = (1.0, 1.4, 1.8, 2.6)
    config.sweep.depth_multipliers = (1.0, 2.0, 3.0, 4.0)
    config.sweep.resolution_multipliers = (1.0, 1.25, 1.5, 2.0)
    # Figure 4: the width sweep repeated at these (depth, resolution) multipliers.
    config.sweep.combined_depth_resolution = ((1.0, 1.0), (2.0, 1.0), (1.0, 1.3), (2.0, 1.3))
    return config
