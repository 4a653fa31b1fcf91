"""The layering the package promises: the model, the steps, the configuration and checkpoints import
on a machine without TensorFlow (the accelerator image has none); every module imports, even inside a
function, only modules of its own layer or lower ones (LAYERS), and none a module that imports it back;
the package never imports `configs`, and `configs/` import only configs and the package's description
layers, so an installed package and its configs both work."""

import ast
import os
import pathlib
import subprocess
import sys

from tests import tensorflow_free, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "efficientnet_jax"
CONFIGS = "configs"
# The package's modules by layer, lowest first (names relative to the package).
LAYERS = (
    (
        "foundations",
        ("errors", "normalizations", "layers", "augment_policies", "batch_mixing", "optim",
         "datasets", "datasets.sklearn_digits", "datasets.digit_folders", "datasets.image_folder"),
    ),
    ("description", ("scaling", "provenance")),
    ("model", ("", "model", "accounting", "summary", "augment", "device_augment")),
    ("configuration", ("configuration", "progressive", "experiments")),
    ("steps and data", ("steps", "input_pipeline")),
    (
        "checkpoints and weights",
        ("checkpointing", "finetuning", "sweep_runner", "pretrained.mapping", "pretrained.state_dicts",
         "pretrained.keras_files", "pretrained.hub"),
    ),
    ("jobs", ("trainer", "evaluation", "prediction", "scaling_report")),
    ("deployment", ("deployed", "export")),  # reads checkpoints as prediction does; converters inside
    (
        "entry points",
        ("console", "supervision", "distributed", "pretrained", "pretrained.command", "pretrained.__main__"),
    ),
)
# configs/ may import the package's layers up to this one (scaling, provenance, configuration, ...).
CONFIGS_TOP_LAYER = "configuration"
CORE = (
    "efficientnet_jax",
    "efficientnet_jax.steps",
    "efficientnet_jax.configuration",
    "efficientnet_jax.checkpointing",
    "efficientnet_jax.model",
)


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_core_and_throughput_benchmark_run_without_tensorflow(tmp_path):
    env = tensorflow_free.environment(str(tmp_path), xla_flags.for_devices(1))
    code = f"""
import sys
try:
    import tensorflow
except ImportError:
    pass
else:
    sys.exit("the import hook is not active")
import {", ".join(CORE)}
import benchmarks.project_steps
"""
    completed = run([sys.executable, "-c", code], env)
    assert completed.returncode == 0, completed.stderr[-3000:]

    throughput = [
        sys.executable,
        os.path.join(REPO, "benchmarks", "throughput.py"),
        "--mode=eval",
        "--width=0.25",
        "--depth=0.25",
        "--resolution=16",
        "--batch=2",
        "--num_classes=10",
        "--steps=1",
    ]
    completed = run(throughput, env)
    assert completed.returncode == 0, completed.stderr[-3000:]


def module_name(path: str) -> str:
    relative = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def package_modules(package: str = PACKAGE) -> dict[str, str]:
    """Every module of `package` (a folder of the repository), by dotted name, and its file."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                modules[module_name(path)] = path
    return modules


def imported_modules(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file: at module level, in a
    function, absolute or relative. `from package import x` counts `package.x` when x is a module,
    else the package itself."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text(), path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None: a depth-first search that meets a module still
    on its own path."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if cycle := visit(imported):
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if cycle := visit(module):
            return cycle
    return None


def test_no_import_cycles_in_the_package_and_configs():
    modules = {**package_modules(), **package_modules(CONFIGS)}
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["efficientnet_jax.steps"] >= {
        "efficientnet_jax.optim",
        "efficientnet_jax.model",
    }  # the parser works
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def layer_of(module: str) -> int:
    """The index in LAYERS of a package module's layer."""
    relative = module.removeprefix(PACKAGE).removeprefix(".")
    for index, (_, members) in enumerate(LAYERS):
        if relative in members:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: place it there")


def test_modules_import_only_their_own_layer_or_lower_ones():
    modules = package_modules()
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, path in sorted(modules.items())
        for target in sorted(imported_modules(name, path, modules))
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_package_never_imports_configs_and_configs_import_only_description_layers():
    package, configs = package_modules(), package_modules(CONFIGS)
    everything = {**package, **configs}
    assert {"configs.default", "configs.imagenet", "configs.scaling.common"} <= set(configs)  # the walk works
    into_configs = [
        f"{name} imports {target}"
        for name, path in sorted(package.items())
        for target in sorted(imported_modules(name, path, everything))
        if target.startswith(CONFIGS)
    ]
    assert not into_configs, "\n".join(into_configs)
    top = [title for title, _ in LAYERS].index(CONFIGS_TOP_LAYER)
    too_high = [
        f"{name} imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, path in sorted(configs.items())
        for target in sorted(imported_modules(name, path, everything))
        if target.startswith(PACKAGE) and layer_of(target) > top
    ]
    assert not too_high, "\n".join(too_high)
    assert imported_modules("configs.imagenet", configs["configs.imagenet"], everything) >= {
        "configs.default",
        "efficientnet_jax.scaling",
    }  # the parser sees both kinds of import
