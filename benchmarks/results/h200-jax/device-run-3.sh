#!/bin/bash
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax MNIST99_DATA=$PWD/.gpu/mnist PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
run() { name=$1; limit=$2; shift 2
  timeout $limit python3 benchmarks/gpu.py -c configs/default.yaml -c configs/gpu.yaml --out $OUT/$name.jsonl "$@" > $OUT/$name.out 2>&1
  echo "== $name rc=$?"; grep -E '^\{"result": "member|Error|error' $OUT/$name.out | cut -c1-420 | tail -4; }
# cold XLA compiles without cuDNN autotuning: is the first model's compile what keeps 99% above 10 s?
export XLA_FLAGS=--xla_gpu_autotune_level=0
run cold-noautotune 100 --skip-baseline --set ensemble.size=1
run cold-noautotune-w32 90 --skip-baseline --set ensemble.size=1 --set model.width=32 --set train.epochs=24
