"""`pip install .` works: the package built as a wheel and installed into a throw-away environment runs
from another directory, where the checkout is not importable: every module imports, the entry scripts'
names are there, and the converter (`python -m efficientnet_jax.pretrained`) writes a checkpoint. The
environment sees the test environment's packages (a .pth file), so nothing is downloaded."""

import ast
import json
import os
import shutil
import site
import subprocess
import sys

from efficientnet_jax import pretrained
from tests.weight_helpers import save_safetensors, source_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_SCRIPTS = ("train.py", "eval.py", "predict.py", "sweep.py", "report.py", "convert_weights.py")

# Run in the throw-away environment: the converter as `python -m` runs it, then the checks.
CHECK = """
import importlib, importlib.util, json, pkgutil, runpy, sys
assert importlib.util.find_spec("configs") is None, "the checkout is importable"
names, weights, out_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.argv = ["-m", weights, "lite0", out_dir]
runpy.run_module("efficientnet_jax.pretrained", run_name="__main__", alter_sys=True)
import efficientnet_jax
from efficientnet_jax import checkpointing
modules = [m.name for m in pkgutil.walk_packages(efficientnet_jax.__path__, "efficientnet_jax.")]
for name in modules:
    if not name.endswith("__main__"):
        importlib.import_module(name)
missing = [f"{module}.{name}" for module, name in names if not hasattr(importlib.import_module(module), name)]
record = checkpointing.read_model_record(out_dir + "/checkpoints/0")
print(json.dumps(dict(package=efficientnet_jax.__file__, modules=modules, missing=missing,
                      record=[record.spec["name"], record.eval_preprocessing])))
"""


def entry_script_imports() -> list[tuple[str, str]]:
    """(module, name) of every `from efficientnet_jax[.x] import name` in the entry scripts."""
    names = set()
    for script in ENTRY_SCRIPTS:
        with open(os.path.join(REPO, script)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("efficientnet_jax"):
                names.update((node.module, alias.name) for alias in node.names)
    return sorted(names)


def run(command: list[str], cwd: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, (
        f"{' '.join(command)}:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
    )
    return completed.stdout


def test_the_installed_package_runs_from_another_directory(tmp_path):
    source, wheels, venv, elsewhere = (tmp_path / name for name in ("source", "wheels", "venv", "elsewhere"))
    elsewhere.mkdir()
    shutil.copytree(
        os.path.join(REPO, "efficientnet_jax"),
        source / "efficientnet_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(os.path.join(REPO, "pyproject.toml"), source)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        str(tmp_path),
    )
    (wheel,) = wheels.iterdir()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], str(tmp_path))
    python = str(venv / "bin" / "python")
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], str(elsewhere)
    ).strip()
    with open(os.path.join(purelib, "test_environment.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")  # after the venv's own site-packages
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        str(tmp_path),
    )

    weights = save_safetensors(source_state_dict("lite0", pretrained.TIMM), tmp_path / "lite0.safetensors")
    out = run([python, "-c", CHECK, json.dumps(entry_script_imports()), weights, "converted"], str(elsewhere))
    converted, checked = out.strip().splitlines()[-2:]
    assert "from timm weights" in converted and "inputs normalised as edge" in converted, out
    result = json.loads(checked)

    assert result["package"].startswith(purelib + os.sep), result[
        "package"
    ]  # the installed copy, not the checkout
    assert {"efficientnet_jax.pretrained.command", "efficientnet_jax.datasets.image_folder"} <= set(
        result["modules"]
    )
    assert result["missing"] == []
    assert result["record"] == ["efficientnet-lite0", "efficientnet"]
    assert os.path.isfile(
        os.path.join(os.path.dirname(result["package"]), "data", "imagenet_class_names.txt")
    )
