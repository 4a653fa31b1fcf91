"""The offline quick start with RandAugment on the devices:
`python train.py --config=configs/quickstart_randaugment.py`.

The quick start (configs/quickstart.py, whose RandAugment pixel constants are scaled to 32-pixel
images) with one RandAugment layer at the reference magnitude 10 and twice the epochs. The official
two layers stall these digits: at magnitude 10 the reference's Solarize threshold wraps to 0
(augment_policies._solarize_threshold), so Solarize inverts every pixel as Invert does: with two
layers 2 x 1/8 x 7/8, about a fifth, of the white-on-black digits reach the network inverted, with
one layer an eighth. A mixture of both polarities is what stalls the tiny network: over 300 steps of
one layer restricted to one group of ops, Invert alone (every image inverted) reached 61% train top-1,
{Invert, Solarize, SolarizeAdd, Cutout} (half of them inverted) 13%, chance being 10%.
"""

import ml_collections

from configs import quickstart


def get_config() -> ml_collections.ConfigDict:
    config = quickstart.get_config()
    config.augment = "randaugment"
    config.augment_on_device = True
    config.randaugment_num_layers = 1
    config.randaugment_magnitude = 10.0
    config.num_epochs = 80.0
    return config
