"""An interpreter without TensorFlow, TensorFlow Datasets or clu, as on the accelerator image: a
`sitecustomize.py` on PYTHONPATH marks them absent, in the process started with this environment and
in every process that one starts."""

import os

BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")

SITECUSTOMIZE = f'''
import sys

# A None entry in sys.modules is how Python marks a module as absent: `import tensorflow` raises
# ModuleNotFoundError and importlib.util.find_spec("tensorflow") returns None, as where it is not
# installed (a finder that raised instead broke libraries that probe for it, such as torch._dynamo).
for name in {BLOCKED!r}:
    sys.modules[name] = None
'''


def environment(folder: str, xla_flags: str) -> dict[str, str]:
    """The environment of a TensorFlow-free subprocess; `folder` receives its sitecustomize.py."""
    with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    python_path = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=python_path, XLA_FLAGS=xla_flags)
