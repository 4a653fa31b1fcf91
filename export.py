"""Export a checkpoint for deployment: `python export.py --checkpoint=/runs/lite0 --format=litert
--quantize=int8 --input=uint8 --output=lite0.tflite`.

--checkpoint is what predict.py takes (a training workdir, a step directory, or the output of
`python -m efficientnet_jax.pretrained`); EMA weights by default. --format is litert (.tflite), onnx
(.onnx) or saved_model (a directory). A JSON sidecar `<output>.json` is written beside the export: the
checkpoint's model record (network, normalisation, eval crop, class names) and how the graph takes
its input, which predict.py --model= reads. The export is then loaded in its runtime and compared with
the JAX model on real eval images (the checkpoint's dataset, or --calibration_data): the largest logit
difference and the top-1 agreement are printed, and a float32 export that differs by more than
efficientnet_jax.export.FLOAT_TOLERANCE ends the run with one line and exit status 1. Needs
requirements-export.txt.
"""

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
from absl import app, flags, logging

from efficientnet_jax import checkpointing, deployed, export

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint",
    None,
    "A workdir (newest step, or --step), a step directory, or a converter output.",
    required=True,
)
flags.DEFINE_integer(
    "step", None, "With a workdir as --checkpoint: the step to export (default: the newest)."
)
flags.DEFINE_enum(
    "weights",
    "ema",
    sorted(checkpointing.WEIGHT_FIELDS),
    "Export the EMA weights (as evaluation does) or the raw ones.",
)
flags.DEFINE_string("format", None, f"One of {', '.join(export.FORMATS)}.", required=True)
flags.DEFINE_string(
    "output",
    None,
    "The file to write (a directory for saved_model); its sidecar is <output>.json.",
    required=True,
)
flags.DEFINE_string(
    "quantize", "none", "none, or for litert: float16, dynamic_int8, int8 (full-integer, calibrated)."
)
flags.DEFINE_string("batch", "1", "The batch the graph takes: a size, or 'dynamic' (onnx, saved_model).")
flags.DEFINE_string(
    "input",
    "float",
    "float: normalised images in; uint8: eval-crop pixels in, the checkpoint's normalisation in the graph.",
)
flags.DEFINE_integer("calibration_images", 100, "With --quantize=int8: images to calibrate on.")
flags.DEFINE_string(
    "calibration_data",
    None,
    "A folder of image files to calibrate and check on (default: the checkpoint's eval split).",
)
flags.DEFINE_integer("check_images", 8, "Real images the export is compared with the JAX model on.")


def run() -> None:
    export.check_options(FLAGS.format, FLAGS.quantize, FLAGS.batch, FLAGS.input)  # before anything is read
    if FLAGS.calibration_images < 1 or FLAGS.check_images < 1:
        raise app.UsageError("--calibration_images and --check_images must be at least 1.")
    description, check = export.export(
        FLAGS.checkpoint,
        FLAGS.format,
        FLAGS.output,
        quantization=FLAGS.quantize,
        batch=FLAGS.batch,
        input=FLAGS.input,
        weights=FLAGS.weights,
        step=FLAGS.step,
        calibration_images=FLAGS.calibration_images,
        calibration_data=FLAGS.calibration_data,
        check_images=FLAGS.check_images,
    )
    logging.info("Wrote %s and %s", FLAGS.output, deployed.sidecar_path(FLAGS.output))
    print(
        f"{FLAGS.output} ({description.format}, {description.quantization}) against JAX on {check.summary()}",
        flush=True,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    console.log_to_file(FLAGS.log_dir)
    with console.user_errors_as_one_line("export.py", export.ExportError, deployed.DeployedModelError):
        run()


if __name__ == "__main__":
    console.run(main)
