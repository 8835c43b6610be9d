#!/usr/bin/env bash
# Every GPU check in one call, for a machine lent for minutes: the CUDA tests, then the peer
# benchmark, bf16 autocast and torch.compile on the card. Each part has its own time limit so a
# slow one cannot eat the rest; logs go to $OUT (else bench/results/gpu).
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

peer="$py bench/peer_benchmark.py --device cuda --peers-python $py --threads 8 --train-tokens 16384 --eval-tokens 8192"
part 150 tests $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
part 150 peer_topk_18432 $peer --arch topk --d-sae 18432 --steps ${STEPS:-512} --reps 2
part 45 peer_bf16_18432 $peer --arch topk --d-sae 18432 --steps ${STEPS:-512} --reps 1 --libs sparsescope sparsescope+signum --bf16
part 90 compile_18432 $py bench/train_throughput.py --device cuda --d-sae 18432 --steps 50 --compile --only "topk (sparse)" relu
part 75 peer_topk_4608 $peer --arch topk --d-sae 4608 --steps ${STEPS:-512} --reps 1
part 60 peer_relu_18432 $peer --arch relu --d-sae 18432 --steps ${STEPS:-512} --reps 1 --libs sparsescope dictionary_learning sae_lens
