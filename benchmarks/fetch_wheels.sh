#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels that benchmarks/accelerator_suite.py needs and the
# accelerator image lacks: ml-collections and its one dependency missing there, PyYAML (absl-py and
# numpy are on the image). Run it from the repository root on a machine with internet; the device
# call then carries .whl/ (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
for requirement in ml-collections==1.1.0 PyYAML==6.0.4; do
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl "$requirement"
done
ls .whl
