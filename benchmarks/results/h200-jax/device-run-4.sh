#!/bin/bash
# The budget curve on the GPU: benchmarks/gpu.py with train.budget 2 min, 30 s, 1 min, then 30 s again,
# in one machine, one XLA compilation cache (the first run compiles cold; a rerun of a budget finds
# the programs its plan compiled). Carried in .gpu/: wheels (whl/), MNIST (mnist/), machine-fingerprint.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax MNIST99_DATA=$PWD/.gpu/mnist PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# XLA's autotuning results kept across processes too, where this jaxlib knows the flag
export XLA_FLAGS=--xla_gpu_per_fusion_autotune_cache_dir=/tmp/xla-autotune
python3 -c "import jax; jax.jit(lambda x: x + 1)(1.0)" 2>/dev/null || { echo "no per-fusion autotune cache"; unset XLA_FLAGS; }
{ date -u; nvidia-smi -L; python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__)";
  bash .gpu/machine-fingerprint; } > $OUT/machine.txt 2>&1
cat $OUT/machine.txt
# One JSON file and one console log for all runs (a line {"run": NAME} before each run's lines).
run() { name=$1; budget=$2; echo "{\"run\": \"$name\"}" >> $OUT/budgets.jsonl; echo "== $name" >> $OUT/console.out
  timeout $((budget + 100)) python3 benchmarks/gpu.py -c configs/default.yaml -c configs/gpu.yaml --skip-baseline \
    --set train.budget=${budget}s --compile-cache /tmp/xla-cache --out $OUT/budgets.jsonl > $OUT/$name.log 2>&1
  rc=$?; cat $OUT/$name.log >> $OUT/console.out; echo "== $name rc=$rc"
  grep -E '^gpu.py:|"result": "(member|ensemble)' $OUT/$name.log | cut -c1-300; rm $OUT/$name.log; }
run b120-cold 120
run b30 30
run b60 60
run b30-again 30
