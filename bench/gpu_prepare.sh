#!/usr/bin/env bash
# Here, before a GPU call: what bench/gpu_run.sh needs on an offline GPU machine (Python 3.12).
#   .whl/        the peers and their pure-Python needs that the GPU image lacks, as wheels
#   .gpu/cache/  the peer benchmark's store of 24,576 SmolLM2 tokens (16,384 to train on, cycled;
#                8,192 held out), fp16 (28 MB; relative error 2e-4) to fit the 64 MiB transfer
# Both folders are listed in .git/info/exclude so they travel with the tree but are never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /.gpu/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl sae-lens==6.54.12 dictionary-learning==0.1.0 eai-sparsify==1.3.3 schedulefree==1.4.1 natsort==8.4.0 \
    simple-parsing==0.1.9 docstring_parser==0.18.0 transformer-lens==3.9.0 better-abc==0.0.3 datasets==5.2.0 \
    dill==0.4.1 multiprocess==0.70.19 fancy-einsum==0.0.3 typeguard==4.6.1 beartype==0.23.1 python-dotenv==1.2.2 \
    tenacity==9.2.1
mkdir -p .gpu/cache
PYTHONPATH=. python3 - <<'PY'
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

sys.path.insert(0, "bench")
from peer_benchmark import prepare

from core.cache import cache_dir

src = prepare(cache_dir(), 24576)
save_file({"acts": load_file(str(src))["acts"].half()}, str(Path(".gpu/cache") / src.name))
print("wrote", Path(".gpu/cache") / src.name)
PY
du -sh .whl .gpu
