"""An interpreter without TensorFlow, TensorFlow Datasets or clu, as on the accelerator image: a
`sitecustomize.py` on PYTHONPATH installs an import hook that refuses them, in the process started
with this environment and in every process that one starts."""

import os

BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")

SITECUSTOMIZE = f'''
import sys


class RefuseImports:
    """Raises ImportError for the packages this machine is pretending not to have."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed here (tests/tensorflow_free.py)")
        return None


sys.meta_path.insert(0, RefuseImports())
'''


def environment(folder: str, xla_flags: str) -> dict[str, str]:
    """The environment of a TensorFlow-free subprocess; `folder` receives its sitecustomize.py."""
    with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    python_path = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=python_path, XLA_FLAGS=xla_flags)
