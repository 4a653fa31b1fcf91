"""The paper's step 2: scale the baseline by depth alpha^phi, width beta^phi and resolution gamma^phi.

    python sweep.py --config=configs/scaling/compound.py:phi=2,alpha=1.2,beta=1.1,gamma=1.15 --workdir=W
    python sweep.py --config=configs/scaling/compound.py --config.sweep.phis='(0, 1, 2)' --workdir=W

`phi=` runs that one phi; without it the sweep runs phi = 0 (the baseline), 1, 2 and 3.
"""

import ml_collections

from configs.scaling import common

DEFAULT_PHIS = (0.0, 1.0, 2.0, 3.0)
PAPER_COEFFICIENTS = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}  # the paper's grid-search result for B0


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"base": "quickstart", "baseline": "", "phi": "", **PAPER_COEFFICIENTS})
    config = common.get_config("compound", args["base"], args["baseline"])
    config.sweep.phis = (common.as_float("phi", args["phi"]),) if args["phi"] else DEFAULT_PHIS
    config.sweep.alpha = args["alpha"]  # depth
    config.sweep.beta = args["beta"]  # width
    config.sweep.gamma = args["gamma"]  # resolution
    return config
