#!/bin/bash
# Device check for issue #6 (GPU path through Keras' JAX backend; the machine has no TensorFlow).
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax MNIST99_DATA=$PWD/.gpu/mnist PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
python3 -c "import jax, keras, pydantic; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1
nproc
run() { name=$1; limit=$2; shift 2
  timeout $limit python3 benchmarks/gpu.py -c configs/default.yaml -c configs/gpu.yaml --out $OUT/$name.jsonl "$@" > $OUT/$name.log 2>&1
  echo "== $name rc=$?"; grep -E '^\{|Epoch 1/|Error|error' $OUT/$name.log | cut -c1-600 | tail -12; }
run default 270 --set train.verbose=2
run wide 220 --skip-baseline --set model.width=64 --set train.epochs=40 --set train.verbose=2
