#!/usr/bin/env bash
# The GPU check, run on the device machine (torch 2.11.0+cu130, no Rust) from the repository root
# with gpu-carry/ from bench/gpu/prepare.sh: the torch engine's parity and run tests on CUDA, the
# Path-X layer's memory, `statespace bench --engine torch` and the PyTorch peers on the same GPU, and
# an LRA config (ListOps, generated) trained on the GPU in f32 and bf16 by the CLI and in f32 by
# `python -m statespace.train` (tokens/s side by side). Each step has its own
# timeout and log in $OUT (default /tmp/gpu-check); a failing step does not stop the others.
set -uo pipefail
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
B=/tmp/gpu-carry-bin
mkdir -p "$B" && tar -C "$B" --strip-components=1 -xJf gpu-carry/bin.tar.xz
PY="${PYTHON:-python3}"
TORCH_LIB="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
export STATESPACE_TORCH_TEST_DEVICE=cuda
step() { # name seconds command…
    local name=$1 secs=$2; shift 2
    echo "== $name ($(date +%T))" | tee -a "$out/summary.txt"
    local t0=$SECONDS
    timeout "$secs" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "   rc $rc, $((SECONDS - t0)) s; $(tail -n 3 "$out/$name.log" | tr '\n' ' ' | cut -c1-400)" | tee -a "$out/summary.txt"
}
step gpu 20 nvidia-smi
step torch 60 "$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.is_available())'
step parity 240 "$B/parity" --nocapture
step runs 240 "$B/runs" --nocapture
for k in s4d s4; do
    for mode in two one; do
        step "memory-$k-$mode" 120 "$B/kernel_memory" "$k" 16384 256 64 1 "$mode" cuda
    done
done
step bench-torch 300 "$B/statespace" bench --engine torch --device cuda --secs 1 --json "$out/bench-torch.json"
cd bench/peers
step peer-s4d-kernel 120 "$PY" torch_s4d.py kernel --h 256 --m 64 --l 4096 --secs 1 --device cuda
step peer-s4d-train 120 "$PY" torch_s4d.py train --layers 4 --h 128 --n 64 --b 16 --l 1024 --secs 2 --device cuda
step peer-s4d-train-small 120 "$PY" torch_s4d.py train --layers 4 --h 64 --n 64 --b 50 --l 784 --secs 2 --device cuda
step peer-s4 120 "$PY" torch_s4.py --h 256 --n 64 --l 4096 --secs 1 --device cuda
cd ../..
step listops-data 120 "$B/statespace" data listops --out /tmp/listops --train 4000 --val 200 --test 200
for p in f32 bf16; do
    step "lra-listops-$p" 300 "$B/statespace" lra --task listops --model s4d --data /tmp/listops \
        --limit-steps 300 --out "/tmp/lra-$p" --quiet --engine torch --device cuda --precision "$p"
    cp "/tmp/lra-$p/metrics.jsonl" "$out/lra-listops-$p-metrics.jsonl" 2>/dev/null
done
# the same config from Python (python -m statespace.train, DDP-ready loop) on the same GPU
step wheel 120 "$PY" -m pip install --no-deps --no-index --target /tmp/pyss gpu-carry/statespace-*.whl
export PYTHONPATH=/tmp/pyss
step py-listops-f32 300 "$PY" -m statespace.train --config configs/lra/listops-s4d.toml \
    --data /tmp/listops --set train.max_steps=300 --out /tmp/py-lra-f32 --device cuda
cp /tmp/py-lra-f32/metrics.jsonl "$out/py-listops-f32-metrics.jsonl" 2>/dev/null
echo "done; logs in $out" | tee -a "$out/summary.txt"
