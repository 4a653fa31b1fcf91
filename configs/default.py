"""The reference ImageNet recipe (tensorflow/tpu models/official/efficientnet, main.py defaults),
written once. Variant configs (`configs/imagenet.py:b3`) and experiments import and change it.

Every field is typed: `--config.batch_size=512` overrides a value, an unknown key or a value of the
wrong type fails before anything compiles.
"""

import ml_collections
from ml_collections import config_dict

from efficientnet_jax import optim


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: a released variant, optionally with coefficient overrides (None keeps the variant's).
    config.model = ml_collections.ConfigDict()
    config.model.variant = "efficientnet-b0"
    # The unscaled network the variant's coefficients scale (stage table, stem, head, activation;
    # scaling.BASELINES): None is the variant's own (B0 for b0..l2, Lite0 for lite*, EdgeTPU-S for
    # edgetpu-*); or 'efficientnet-b0' | 'efficientnet-lite0' | 'efficientnet-edgetpu-s' | 'mobilenetv2'.
    config.model.baseline = config_dict.placeholder(str)
    # A stage table of your own in the official block-string form, e.g. ('r1_k3_s11_e1_i32_o16', ...):
    # replaces the baseline's stages (its stem, head and activation stay).
    config.model.block_strings = config_dict.placeholder(tuple)
    config.model.width = config_dict.placeholder(float)
    config.model.depth = config_dict.placeholder(float)
    config.model.dropout_rate = config_dict.placeholder(float)
    config.model.drop_connect_rate = 0.2  # stochastic depth of the last block
    # Batch-norm moving averages: stats = momentum * stats + (1 - momentum) * batch. The reference's
    # 0.99 needs long schedules; runs of a few hundred steps want about 0.9 (configs/scaling/common.py).
    config.model.batch_norm_momentum = 0.99
    config.model.depthwise_implementation = "auto"  # 'auto' | 'xla' | 'shift' (see layers.py)
    config.model.remat = False  # per-block rematerialisation: less memory, more compute
    config.half_precision = True  # bfloat16 activations; float32 parameters, optimizer state and loss
    # Which replicas pool their batch-norm statistics in training: 'reference' (the official TPU rule,
    # configuration.reference_batch_norm_group_size: B0-B7, Lite and EdgeTPU each replica alone up to 8
    # replicas, above that consecutive groups of max(8, replicas // 8); EfficientNetV2 consecutive groups
    # of min(8, replicas)), 'all' (every replica: N devices compute what one device computes on the
    # whole batch), or a number of replicas as a string ('16'): consecutive groups of that many in
    # jax.devices()' order. One device: every rule is the same.
    config.batch_norm_group_size = "reference"

    # Data (tensorflow-datasets + tf.data on the host CPU).
    config.dataset = "imagenet2012"  # a TFDS name, or 'folder:/path/to/images' (datasets/image_folder.py)
    config.data_dir = config_dict.placeholder(str)
    config.manual_dir = config_dict.placeholder(str)  # where the ImageNet tar files are, to prepare it
    config.train_split = "train"
    config.eval_split = "validation"
    # Evaluation; training too unless train_image_size is set. None follows the weights: the size the
    # checkpoint eval.py evaluates records, else (and in training) the variant's own (224 for B0).
    config.image_size = config_dict.placeholder(int)
    config.train_image_size = config_dict.placeholder(int)  # None: image_size (EfficientNetV2 trains smaller)
    config.shuffle_buffer_size = 16_384
    config.crop_area_range = (0.08, 1.0)
    config.crop_aspect_range = (3 / 4, 4 / 3)
    config.crop_min_object_covered = 0.1
    config.crop_max_attempts = 10
    # A failed random crop (every attempt rejected) becomes the eval crop, as in EfficientNet's
    # `_decode_and_random_crop`; False keeps the whole image, as EfficientNetV2's `preprocess_for_train`.
    config.crop_fallback_to_center = True
    # How evaluation crops and how both train and eval resize (input_pipeline.eval_image, resize). None
    # follows the weights: what the checkpoint eval.py evaluates (or this job resumes) records, else the
    # official code's for the variant (configuration.resolve_preprocessing). eval_preprocessing:
    # 'efficientnet' (centre crop with eval_crop_padding) | 'efficientnetv2' (V2-S..XL's: no crop from
    # 320 pixels up) | 'efficientnetv2_finetune' (the whole image: V2's ImageNet-21k weights fine-tuned on
    # ImageNet). eval_crop_padding: pixels (None: 32). resize_method: 'tf1_bicubic' (EfficientNet's) |
    # 'bilinear' (EfficientNetV2's own) | 'bicubic' (TF2's, which this project used before).
    config.eval_preprocessing = config_dict.placeholder(str)
    config.eval_crop_padding = config_dict.placeholder(int)
    config.resize_method = config_dict.placeholder(str)
    config.cache_eval = False
    config.augment = config_dict.placeholder(str)  # None | 'autoaugment' | 'randaugment'
    config.randaugment_num_layers = 2
    config.randaugment_magnitude = 10.0
    # RandAugment's pixel constants at magnitude 10: translation and cutout half-size (the reference's,
    # for ImageNet-sized images; a config at another image size scales them).
    config.randaugment_translate_const = 100
    config.randaugment_cutout_const = 40
    # Mixup / CutMix (batch_mixing.py): Beta(alpha, alpha) per example, 0 turns a method off; with both
    # set, half of each device's batch gets each. Labels then reach the step as probabilities.
    config.mixup_alpha = 0.0
    config.cutmix_alpha = 0.0
    # EfficientNetV2's progressive learning (progressive.py): num_stages stages of equal length, in which
    # the train image size grows from min_image_size to the train size and the RandAugment magnitude,
    # Mixup and CutMix alphas (and, when min_dropout_rate is set, the dropout rate) grow linearly from
    # these minima to the config's own values. 0 or 1 stage: off (B0-B7); configs/imagenet.py sets 4 for
    # V2. The minima are the official code's (efficientnetv2/main.py, hparams.py `ibase`); dropout stays
    # at the model's there (None), the paper's Table 6 grows it from 0.1.
    config.progressive = ml_collections.ConfigDict()
    config.progressive.num_stages = 0
    config.progressive.min_image_size = 128
    config.progressive.min_randaugment_magnitude = 5.0
    config.progressive.min_mixup_alpha = 0.0
    config.progressive.min_cutmix_alpha = 0.0
    config.progressive.min_dropout_rate = config_dict.placeholder(float)
    # Where the random flip and config.augment run. True: inside the train step, on the accelerators
    # (device_augment.py), per example from (seed, host, step, example index), so the host only decodes,
    # crops and resizes. False: on the host in tf.data (augment.py, the reference the device version is
    # tested against). True on the CPU too, where the batched JAX ops cost less per image than the host's
    # (BENCHMARKS.md, "Augmentation on the device").
    config.augment_on_device = True
    config.skip_corrupt_images = True  # undecodable train images: skip and count (False: raise)
    # (pixels - mean) / std of the network's inputs. None follows the weights: the normalisation saved
    # with config.init_checkpoint (or the checkpoint eval.py evaluates, or resumed), else the variant's
    # (ImageNet's mean/std for B0-B7; 127/128 for Lite and EdgeTPU). Or 'imagenet' | 'edge' (127/128) |
    # 'signed_unit' ([-1, 1], AdvProp weights) | explicit 'mean=R,G,B std=R,G,B' of pixels in [0, 255].
    config.input_normalization = config_dict.placeholder(str)

    # Optimisation (global batch over all hosts and devices).
    config.batch_size = 2048  # the reference code's default; the paper used 4096
    config.eval_batch_size = 1024
    config.num_epochs = 350.0
    config.num_train_steps = config_dict.placeholder(int)  # overrides num_epochs when set
    config.base_learning_rate = 0.016  # per 256 examples: peak = 0.016 * batch_size / 256
    config.warmup_epochs = 5.0
    config.lr_decay_factor = 0.97
    config.lr_decay_epochs = 2.4
    config.update(optim.REFERENCE_RMSPROP)  # rmsprop_decay, _momentum, _epsilon, _initial_scale
    config.weight_decay = 1e-5  # L2 added to the loss, batch-norm variables excluded
    config.label_smoothing = 0.1
    config.ema_decay = 0.9999

    # Fine-tuning (configs/finetune_*.py): start a fresh job from the weights of another checkpoint.
    # A training workdir, one of its step directories, or `python -m efficientnet_jax.pretrained`'s
    # output; None trains from scratch. A resumed job ignores it (its own checkpoint wins).
    config.init_checkpoint = config_dict.placeholder(str)
    config.init_weights = "ema"  # 'ema' | 'raw': which weights of init_checkpoint to start from
    config.keep_classifier = False  # also start the classifier from init_checkpoint (same classes)
    config.freeze_backbone = False  # train only the classifier
    config.freeze_batch_norm = False  # normalise with, and keep, init_checkpoint's moving statistics
    config.backbone_learning_rate_multiplier = 1.0  # every parameter but the classifier's: lr x this

    # Bookkeeping.
    config.log_every_steps = 100
    config.eval_every_steps = 5000  # and at the end
    config.checkpoint_every_steps = 1000  # and at the end, and on SIGTERM
    config.keep_checkpoints = 3
    config.prefetch_batches = 2  # batches queued on the devices ahead of the step
    return config
