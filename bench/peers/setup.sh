#!/usr/bin/env bash
# The peers' own environment: a venv layered on the main one (same torch 2.13.0, no second
# copy), with SAELens, dictionary_learning and sparsify added without their dependency
# chains (dictionary_learning's nnsight pulls a CUDA torch and torchvision). Only the
# modules the benchmark imports are needed: their SAE classes and trainers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${PEERS_VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-deps "sae-lens==6.54.12" "dictionary-learning==0.1.0" "eai-sparsify==1.3.3" \
    "schedulefree" "natsort" "einops" "simple-parsing" "docstring-parser" "babe==0.0.7" "nltk" \
    "plotly" "plotly-express" "transformer-lens" "jaxtyping" "wadler-lindig" "beartype" "better-abc" \
    "fancy-einsum" "typeguard" "python-dotenv" "tenacity"
"$venv/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "$venv/bin/python"
