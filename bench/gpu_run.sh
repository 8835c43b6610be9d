#!/usr/bin/env bash
# Every GPU check in one call, for a machine lent for minutes: the CUDA tests, then the peer
# benchmark, the bare step of dense and sparse TopK and ReLU, and bf16 autocast on the card
# (`train_throughput.py --compile` measures torch.compile when there is time). Each part has its
# own time limit so a slow one cannot eat the rest; logs go to $OUT (else bench/results/gpu).
#
# The machine is offline, so what it lacks travels with the checkout (both folders ignored by git):
#   .whl/        the peers and their pure-Python needs, as py3.12 wheels (bash bench/gpu_prepare.sh)
#   .gpu/cache/  the peer benchmark's activation store, fp16, from `bash bench/gpu_prepare.sh`
set -uo pipefail
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d .gpu/cache ] && export SPARSESCOPE_CACHE=$PWD/.gpu/cache
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$out/gpu.txt"

part() {  # part SECONDS LOGNAME CMD...: run one part under its own limit, keep its log
    local limit=$1 log=$2; shift 2
    echo "== $log (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$log.log"
}

# Sized from the 2026-11-26 H200 lease: one library's 128-step run took ~16 s there (start-up included),
# the CUDA tests 29 s; a first version with 512 steps and 2 repetitions ran out of its limits.
# SAELens is left out: its package imports wandb, which the image lacks.
peer="$py bench/peer_benchmark.py --device cuda --peers-python $py --threads 8 --train-tokens 16384 --eval-tokens 8192 --steps ${STEPS:-128}"
libs="--libs sparsescope sparsescope+signum sparsify dictionary_learning"
part 90 tests $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
part 180 peer_topk_18432 $peer --arch topk --d-sae 18432 --reps 2 $libs
part 90 peer_topk_4608 $peer --arch topk --d-sae 4608 --reps 1 $libs
part 60 throughput_18432 $py bench/train_throughput.py --device cuda --d-sae 18432 --steps 50 --only topk relu
part 45 peer_bf16_18432 $peer --arch topk --d-sae 18432 --reps 1 --libs sparsescope sparsescope+signum --bf16
part 60 peer_relu_18432 $peer --arch relu --d-sae 18432 --reps 1 --libs sparsescope dictionary_learning
