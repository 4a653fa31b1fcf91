"""Classify image files: `python predict.py --checkpoint=/runs/b0 cat.jpg dog.png`.

--checkpoint is a training workdir (its newest step, or --step=N), a step directory, or the output of
`python -m efficientnet_jax.pretrained`; or --model=FILE is a .tflite or .onnx file export.py wrote, run
in its own runtime (requirements-export.txt) with its sidecar's record. The network, the input
normalisation, the eval crop and the class names come from the checkpoint, so no --config is needed.
Prints the --top_k classes of each image and writes them all as JSON to --output. An image that cannot
be read or decoded is reported by name and the others are still classified; the run then ends with a
line naming those images and exit status 1, so that a script notices.
"""

import json

from efficientnet_jax import console  # before anything imports TensorFlow: console.py imports it quietly

# isort: split
from absl import app, flags, logging

from efficientnet_jax import checkpointing, deployed, prediction

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint", None, "A workdir (newest step, or --step), a step directory, or a converter output."
)
flags.DEFINE_string(
    "model",
    None,
    "Instead of --checkpoint: a file export.py wrote (.tflite, .onnx), beside its .json sidecar.",
)
flags.DEFINE_integer("step", None, "With a workdir as --checkpoint: the step to use (default: the newest).")
flags.DEFINE_enum(
    "weights",
    "ema",
    sorted(checkpointing.WEIGHT_FIELDS),
    "Classify with the EMA weights (as evaluation does) or the raw ones.",
)
flags.DEFINE_integer(
    "top_k", 5, "Classes shown per image, most probable first (at most the number of classes)."
)
flags.DEFINE_string("output", None, "JSON file to write the predictions to.")


class UnclassifiedImagesError(ValueError):
    """Some images could not be read or decoded; the others were classified and reported."""


def print_predictions(results: dict) -> None:
    for entry in results["predictions"]:
        if "error" in entry:
            print(f"{entry['image']}: {entry['error']}")
            continue
        print(entry["image"])
        for rank, guess in enumerate(entry["top_k"], start=1):
            name = f"  {guess['name']}" if guess["name"] != guess["label"] else ""
            print(f"  {rank}. {guess['probability']:.4f}  {guess['label']}{name}")
    print(flush=True)


def run(image_paths: list[str]) -> None:
    if not image_paths:
        raise app.UsageError(
            "Name at least one image file: python predict.py --checkpoint=DIR IMAGE [IMAGE ...]"
        )
    if FLAGS.top_k < 1:
        raise app.UsageError(f"--top_k must be at least 1, got {FLAGS.top_k}.")
    if (FLAGS.checkpoint is None) == (FLAGS.model is None):
        raise app.UsageError("Give either --checkpoint=DIR or --model=FILE (an export), not both or neither.")
    if FLAGS.model:
        results = deployed.predict(FLAGS.model, image_paths, FLAGS.top_k)
    else:
        results = prediction.predict(FLAGS.checkpoint, image_paths, FLAGS.top_k, FLAGS.weights, FLAGS.step)
    logging.info(
        "Classified with %s, %s weights of step %d (%s), inputs normalised as %s.",
        results["model"],
        results["weights"],
        results["step"],
        results["checkpoint"],
        results["input_normalization"],
    )
    print_predictions(results)
    if FLAGS.output:
        try:
            with open(FLAGS.output, "w") as f:
                json.dump(results, f, indent=2)
        except OSError as error:
            raise app.UsageError(
                f"Cannot write --output={FLAGS.output} ({error.strerror or error})."
            ) from error
        logging.info("Wrote %s", FLAGS.output)
    failed = [f"{entry['image']} {entry['error']}" for entry in results["predictions"] if "error" in entry]
    if failed:
        raise UnclassifiedImagesError(
            f"{len(failed)} of {len(image_paths)} images not classified: {'; '.join(failed)}."
        )


def main(argv):
    console.log_to_file(FLAGS.log_dir)
    with console.user_errors_as_one_line("predict.py", UnclassifiedImagesError, deployed.DeployedModelError):
        run(argv[1:])


if __name__ == "__main__":
    console.run(main)
