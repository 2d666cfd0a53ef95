#!/usr/bin/env bash
# Peer comparison for `statespace bench` (not part of CI). Installs torch (CPU works; ~5 GB with its
# CUDA wheels), jax and s5-pytorch from PyPI into a venv, runs the references written from the papers'
# formulas on the bench's shapes, then runs `statespace bench --peers` so every row shows
# statespace next to the peers, measured on this machine in this run.
#
#   bench/peers/run.sh [--quick]          (VENV=dir to reuse a venv; THREADS=2 by default)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$here/.venv}"
threads="${THREADS:-2}"
out="$here/results.jsonl"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.11.0 numpy jax s5-pytorch   # torch pinned: the torch engine's version
fi
py="$venv/bin/python"
: > "$out"
echo "peers: torch S4D kernel, training step, recurrent step" >&2
"$py" "$here/torch_s4d.py" kernel --h 256 --m 64 --l 4096 --threads "$threads" >> "$out"
"$py" "$here/torch_s4d.py" train --layers 4 --h 128 --n 64 --b 16 --l 1024 --threads "$threads" >> "$out"
"$py" "$here/torch_s4d.py" train --layers 4 --h 64 --n 64 --b 50 --l 784 --threads "$threads" >> "$out"
"$py" "$here/torch_s4d.py" step --layers 6 --h 256 --n 64 >> "$out"
echo "peers: torch S4 (DPLR) kernel" >&2
"$py" "$here/torch_s4.py" --check >&2
"$py" "$here/torch_s4.py" --h 256 --n 64 --l 4096 --threads "$threads" >> "$out"
echo "peers: jax S4D kernel" >&2
"$py" "$here/jax_s4d.py" --h 256 --m 64 --l 4096 >> "$out"
echo "peers: s5-pytorch S5 layer" >&2
"$py" "$here/s5_torch.py" --b 16 --h 128 --p 64 --l 1024 --threads "$threads" >> "$out"
cd "$root"
cargo run --release --locked -p statespace-cli -- bench --threads "$threads" --peers "$out" \
    --json "$here/results.json" "$@"
