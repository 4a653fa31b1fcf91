"""eval.py and the converter: metrics equal to the training job's own evaluation, every example
counted once, --follow, clear refusals (another model, corrupt files, not a checkpoint) that write
nothing, and converted Keras weights read back bit-exactly.

One tiny job is trained per module (3 steps, checkpoints at steps 2 and 3); tests that could alter
its workdir work on a copy. Compilation dominates on 2 cores, so the eval step keeps the training
job's shapes wherever the test allows and the CLIs run in subprocesses only where the CLI is what is
tested (they reuse the compiled steps through the persistent cache set in conftest.py).
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from efficientnet_jax import (
    checkpointing,
    configuration,
    evaluation,
    finetuning,
    normalizations,
    pretrained,
    trainer,
)
from efficientnet_jax.checkpointing import CheckpointError
from efficientnet_jax.model import model_spec
from tests.checkpoint_damage import DAMAGES, damage_array_files
from tests.weight_helpers import import_keras
from tests.workers.tiny_config import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_SPLIT_SIZE = 360  # sklearn_digits' test split
TIMING_KEY = "images_per_second"  # the only field that may differ between two evaluations


def trained_job_config(data_dir):
    """No warm-up and a large learning rate, so that three steps move the raw weights visibly away
    from the EMA (tests/test_predict.py trains the same job: the persistent cache shares its steps).
    Host flips: with the device's draws this seed's three steps at that rate end with raw and EMA both
    at the uniform prediction (loss ln 10), which the EMA/raw gap below cannot see."""
    return tiny_config(
        data_dir, num_train_steps=3, checkpoint_every_steps=2, warmup_epochs=0.0, base_learning_rate=1.0,
        augment_on_device=False,
    )


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
    """A finished training job: checkpoints at steps 2 and 3, final_metrics.json of step 3."""
    path = str(tmp_path_factory.mktemp("run"))
    trainer.train_and_evaluate(trained_job_config(data_dir), path)
    return path


@pytest.fixture(scope="module")
def evaluator(data_dir):
    return evaluation.Evaluator(tiny_config(data_dir))


def run_eval_cli(data_dir, *flags):
    command = [
        sys.executable, os.path.join(REPO, "eval.py"),
        f"--config={os.path.join(REPO, 'tests', 'workers', 'tiny_config.py')}:{data_dir}", *flags,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def files_under(path):
    return sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)


def normalisation_warnings(caplog):
    messages = [record.getMessage() for record in caplog.records]
    return [message for message in messages if "config.input_normalization" in message]


def without_timing(results):
    return {key: value for key, value in results.items() if key != TIMING_KEY}


def test_metrics_equal_the_training_jobs_evaluation_and_count_every_example_once(workdir, evaluator):
    """The training job evaluated the same state (step 3) through `steps.evaluate`. The eval batch,
    64, does not divide the 360 examples: the last batch is padded with 24 masked slots."""
    assert TEST_SPLIT_SIZE % evaluator.config.eval_batch_size
    with open(os.path.join(workdir, checkpointing.FINAL_METRICS_FILE)) as f:
        final = json.load(f)
    location = checkpointing.locate_checkpoint(workdir)
    assert location.step == final["step"] == 3
    results = {weights: evaluator.evaluate(location, weights) for weights in ("ema", "raw")}
    for weights, metrics in results.items():
        assert metrics["num_examples"] == final[f"eval_{weights}_num_examples"] == TEST_SPLIT_SIZE
        for key in ("top1", "top5", "loss"):
            np.testing.assert_allclose(metrics[key], final[f"eval_{weights}_{key}"], rtol=1e-6, err_msg=key)
        assert (metrics["step"], metrics["weights"], metrics["split"]) == (3, weights, "test")
        assert metrics["input_normalization"] == "imagenet"  # B0's, saved by the job with its weights
        assert metrics[TIMING_KEY] > 0
    assert abs(results["ema"]["loss"] - results["raw"]["loss"]) > 1e-3  # the EMA lags the raw weights


def test_cli_follow_evaluates_each_checkpoint_once_and_agrees_with_a_second_evaluation(
    data_dir, workdir, evaluator
):
    """The job has finished: --follow evaluates steps 2 and 3, once each, and stops at final_metrics'
    step 3. The JSON it writes equals an in-process evaluation, the timing aside."""
    result = run_eval_cli(
        data_dir, f"--checkpoint={workdir}", "--follow", "--poll_interval_s=0.1", "--follow_timeout_s=200"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"step":') == 2, result.stdout
    written = sorted(name for name in os.listdir(workdir) if name.startswith("eval_"))
    assert written == ["eval_test_2_ema.json", "eval_test_3_ema.json"]
    with open(os.path.join(workdir, "eval_test_3_ema.json")) as f:
        from_cli = json.load(f)
    assert set(from_cli) >= {"top1", "top5", "loss", "num_examples", "step", "weights", TIMING_KEY}
    again = evaluator.evaluate(checkpointing.locate_checkpoint(workdir, step=3), "ema")
    assert without_timing(from_cli) == without_timing(again)


def test_checkpoint_argument_forms(workdir, tmp_path):
    step_directory = os.path.join(workdir, "checkpoints", "2")
    assert checkpointing.locate_checkpoint(step_directory) == checkpointing.locate_checkpoint(workdir, step=2)
    location = checkpointing.locate_checkpoint(step_directory)
    assert (location.step, location.results_directory) == (2, os.path.abspath(workdir))
    assert evaluation.results_path(location, "test[:50%]", "raw") == os.path.join(
        os.path.abspath(workdir), "eval_test_50_2_raw.json"
    )
    # A step directory copied out of its workdir: the results go next to it.
    loose = shutil.copytree(step_directory, tmp_path / "2")
    assert checkpointing.locate_checkpoint(str(loose)).results_directory == str(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 7; it has steps \[2, 3\]"):
        checkpointing.locate_checkpoint(workdir, step=7)
    with pytest.raises(CheckpointError, match="contradicts"):
        checkpointing.locate_checkpoint(step_directory, step=3)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        checkpointing.locate_checkpoint(str(tmp_path / "2" / "state"))
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpointing.locate_checkpoint(str(tmp_path / "missing"))


def test_evaluation_follows_the_normalisation_saved_with_the_weights(
    workdir, evaluator, data_dir, tmp_path, caplog
):
    """The job saved, beside its spec, the normalisation it trained with (B0's ImageNet statistics:
    the config sets none), its eval crop and its classes. Evaluation follows the saved value: a record
    saying 127/128 is evaluated on 127/128 inputs without a warning; a record without the field (written
    before it existed, when every job trained on ImageNet statistics) means ImageNet; a config value
    wins over the record, with a warning naming both."""
    location = checkpointing.locate_checkpoint(workdir)
    record = checkpointing.read_model_record(location.step_directory)
    assert record.input_normalization == normalizations.IMAGENET_NORMALIZATION
    assert record.eval_crop_padding == evaluator.config.eval_crop_padding == 0
    assert record.class_names == tuple(str(digit) for digit in range(10))
    assert record.model_spec() == evaluator.spec
    default = evaluator.evaluate(location, "ema")

    copy = shutil.copytree(location.step_directory, tmp_path / "3")
    metadata = copy / "model" / "metadata"  # the JSON of the `model` item, as orbax writes it
    saved = json.loads(metadata.read_text())
    edge = {"mean": [127.0] * 3, "std": [128.0] * 3}
    metadata.write_text(json.dumps({**saved, "input_normalization": edge}))
    caplog.clear()
    followed = evaluator.evaluate(checkpointing.locate_checkpoint(str(copy)), "ema")
    assert followed["input_normalization"] == "edge"
    assert abs(followed["loss"] - default["loss"]) > 1e-4  # other inputs, same weights
    assert not normalisation_warnings(caplog)

    explicit_evaluator = evaluation.Evaluator(tiny_config(data_dir, input_normalization="edge"))
    explicit = explicit_evaluator.evaluate(location, "ema")
    assert explicit["input_normalization"] == "edge"
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(explicit[key], followed[key], rtol=1e-6, err_msg=key)
    warnings = normalisation_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "config.input_normalization=edge differs from imagenet" in warnings[0]

    record_fields = ("input_normalization", "eval_crop_padding", "class_names")
    old = {key: value for key, value in saved.items() if key not in record_fields}
    metadata.write_text(json.dumps(old))
    spec = {key: value for key, value in old.items() if key != "resize_method"}
    assert checkpointing.read_model_record(str(copy)) == checkpointing.ModelRecord(
        spec=spec, resize_method=old["resize_method"]
    )
    from_old = evaluator.evaluate(checkpointing.locate_checkpoint(str(copy)), "ema")
    assert from_old["input_normalization"] == "imagenet"
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(from_old[key], default[key], rtol=1e-6, err_msg=key)


def preprocessing_warnings(caplog):
    messages = [record.getMessage() for record in caplog.records]
    return [message for message in messages if "the weights of" in message and "evaluated" in message]


def test_evaluation_follows_the_eval_preprocessing_saved_with_the_weights(
    workdir, evaluator, data_dir, tmp_path, caplog
):
    """The job saved the crop, resize and size it resolved (the tiny config sets the quick start's
    padding 0 and 16 pixels, and leaves the crop and resize unset: B0's official, TF1 bicubic). A record
    saying EfficientNetV2's eval (its crop, bilinear resize) at 24 pixels is evaluated so by a config
    that leaves configs/default.py's preprocessing keys and image size unset, without a warning: the
    metrics are those of the original checkpoint evaluated by a config that sets V2's eval at 24
    pixels, and differ from the original's own. That config, set against the original's record, is
    used, with one warning naming both preprocessings and one naming both sizes."""
    location = checkpointing.locate_checkpoint(workdir)
    record = checkpointing.read_shared_model_record(location.step_directory)
    assert record.preprocessing() == configuration.Preprocessing("efficientnet", 0, "tf1_bicubic")
    assert record.resolution() == 16
    own = evaluator.evaluate(location, "raw")  # the EMA of three steps is near the uniform prediction
    assert own["image_size"] == 16
    copy = shutil.copytree(location.step_directory, tmp_path / "3")
    metadata = copy / "model" / "metadata"
    saved = json.loads(metadata.read_text())
    v2_eval = {"eval_preprocessing": "efficientnetv2", "resize_method": "bilinear", "resolution": 24}
    v2_record = {**saved, **v2_eval}
    metadata.write_text(json.dumps(v2_record))
    unset = tiny_config(data_dir, image_size=None)
    assert (unset.eval_preprocessing, unset.resize_method, unset.image_size) == (None, None, None)
    caplog.clear()
    followed = evaluation.Evaluator(unset).evaluate(checkpointing.locate_checkpoint(str(copy)), "raw")
    assert followed["preprocessing"] == "efficientnetv2 crop (padding 0), bilinear resize"
    assert followed["image_size"] == 24
    assert not preprocessing_warnings(caplog)
    # Other pixels, same weights: the three-step network is near the uniform prediction, so the loss
    # moves little (3.3e-5 measured), still a hundred times a float32 rounding of the mean.
    assert abs(followed["loss"] - own["loss"]) > 1e-6

    v2_config = tiny_config(
        data_dir, eval_preprocessing="efficientnetv2", resize_method="bilinear", image_size=24
    )
    explicit = evaluation.Evaluator(v2_config).evaluate(location, "raw")
    assert (explicit["preprocessing"], explicit["image_size"]) == (followed["preprocessing"], 24)
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(explicit[key], followed[key], rtol=1e-6, err_msg=key)
    crop, size = preprocessing_warnings(caplog)
    assert "config.eval_preprocessing=efficientnetv2, config.resize_method=bilinear differs from " in crop
    assert "efficientnet crop (padding 0), tf1_bicubic resize, the preprocessing the weights of" in crop
    assert "config.image_size=24 differs from 16, the size the weights of" in size


def test_a_spec_saved_before_fused_blocks_and_fix_head_stem_existed_reads_as_the_mbconv_network():
    """Checkpoints written before StageSpec.fused / identity_skip and ModelSpec.fix_head_stem lack them:
    they are of MBConv stages with residuals and a scaled stem and head, so they still fit their model,
    for resuming, evaluation and fine-tuning alike, and a Lite model is still told apart."""
    saved = checkpointing.spec_to_json(model_spec("b0"))
    del saved["fix_head_stem"]
    for stage in saved["stages"]:
        del stage["fused"], stage["identity_skip"]
    checkpointing.check_same_model(saved, model_spec("b0"), "old")
    finetuning.check_same_backbone(saved, model_spec("b0", num_classes=10), "old")
    with pytest.raises(CheckpointError, match=r"differing: stages, fix_head_stem\)"):
        checkpointing.check_same_model(saved, model_spec("lite0"), "old")


def test_cli_refuses_another_model_naming_both_and_writes_nothing(data_dir, workdir):
    before = files_under(workdir)
    result = run_eval_cli(
        data_dir,
        f"--checkpoint={workdir}",
        "--config.model.variant=efficientnet-b1",
        "--config.model.width=0.5",
    )
    assert result.returncode != 0
    message = result.stderr
    assert "eval.py: The checkpoint at" in message and "Traceback" not in message, message[-3000:]
    assert "efficientnet-b0 (width 0.25" in message and "efficientnet-b1 (width 0.5" in message, (
        message[-3000:]
    )
    assert files_under(workdir) == before


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_array_files_are_a_clear_error_and_nothing_is_written(workdir, evaluator, tmp_path, damage):
    copy = str(shutil.copytree(workdir, tmp_path / "run"))
    damage_array_files(os.path.join(copy, "checkpoints", "3"), damage)
    before = files_under(copy)
    with pytest.raises(CheckpointError, match=r"Cannot read the checkpoint at .*3: .* truncated or corrupt"):
        evaluation.evaluate_to_file(evaluator, checkpointing.locate_checkpoint(copy), "ema")
    assert files_under(copy) == before


def test_converted_keras_weights_are_a_checkpoint_eval_reads(tmp_path, capsys):
    """Keras B0 with random weights (32x32 input: the weights do not depend on it) saved as
    `.weights.h5`, converted through the command's entry point; the checkpoint holds exactly the
    imported variables as both EMA and raw weights, for a 1000-class B0."""
    keras = import_keras()
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3))
    normalization = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    count = normalization.get_weights()[2]  # the published files' front-end: ImageNet statistics
    normalization.set_weights(
        [np.asarray(pretrained.IMAGENET_MEAN), np.asarray(pretrained.IMAGENET_STD) ** 2, count]
    )
    weights_file = str(tmp_path / "b0.weights.h5")
    model.save_weights(weights_file)
    out_dir = tmp_path / "converted"

    pretrained.main([weights_file, "b0", str(out_dir)])
    assert "Evaluate it with: python eval.py --config=configs/imagenet.py:b0" in capsys.readouterr().out
    location = checkpointing.locate_checkpoint(str(out_dir))
    assert (location.step, location.results_directory) == (0, str(out_dir))
    record = checkpointing.read_model_record(location.step_directory)  # what the Keras weights expect
    assert (record.input_normalization, record.eval_crop_padding) == (
        normalizations.IMAGENET_NORMALIZATION,
        32,
    )
    assert record.class_names is None and record.model_spec() == model_spec("b0")
    imported = pretrained.from_keras(weights_file, "b0")
    for weights in ("ema", "raw"):
        restored = checkpointing.read_variables(location, model_spec("b0"), weights)
        assert jax.tree.structure(restored) == jax.tree.structure(imported)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(imported)):
            np.testing.assert_array_equal(a, b)

    truncated_file = str(tmp_path / "b0_truncated.weights.h5")  # an interrupted download
    with open(weights_file, "rb") as source, open(truncated_file, "wb") as target:
        target.write(source.read()[: os.path.getsize(weights_file) // 2])
    refusals = [
        ([weights_file, "b0", str(out_dir)], "exists and is not empty"),
        ([weights_file, "b1", str(tmp_path / "b1")], "look like efficientnet-b0"),
        ([str(tmp_path / "b0.json"), "b0", str(tmp_path / "json")], "not a weights file"),
        ([truncated_file, "b0", str(tmp_path / "truncated")], "truncated file"),
    ]
    (tmp_path / "b0.json").write_text("{}")
    converted = {path: os.path.getmtime(path) for path in files_under(out_dir)}
    for argv, message in refusals:
        with pytest.raises(SystemExit) as exit_info:
            pretrained.main(argv)
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err
    for refused in ("b1", "json", "truncated"):
        assert not os.path.exists(tmp_path / refused)
    assert {path: os.path.getmtime(path) for path in files_under(out_dir)} == converted  # not overwritten


def test_follow_skips_a_damaged_checkpoint_and_keeps_following(workdir, evaluator, tmp_path, caplog):
    """Step 2 damaged: --follow warns naming it, evaluates step 3 and stops at the job's final step."""
    copy = str(shutil.copytree(workdir, tmp_path / "run"))
    for name in os.listdir(copy):  # results of the tests that evaluated the module's job before this one
        if name.startswith("eval_"):
            os.remove(os.path.join(copy, name))
    damage_array_files(os.path.join(copy, "checkpoints", "2"), "delete")
    results = list(evaluation.follow(evaluator, copy, "ema", poll_interval_s=0.1, timeout_s=200))
    assert [result["step"] for result, _ in results] == [3]
    assert sorted(name for name in os.listdir(copy) if name.startswith("eval_")) == ["eval_test_3_ema.json"]
    assert any("checkpoint of step 2" in record.getMessage() and "damaged" in record.getMessage()
               for record in caplog.records), [record.getMessage() for record in caplog.records]
