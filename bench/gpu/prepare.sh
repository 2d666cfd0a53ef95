#!/usr/bin/env bash
# Builds what the GPU check (bench/gpu/check.sh) runs on a machine with a GPU and torch 2.11 but no
# Rust: the CLI with the torch engine, the torch engine's parity and run tests, the memory example, the
# Python package's wheel —
# dev profile (opt-level 3; a release build would compile torch-sys's C++ again), debug info
# stripped and xz-compressed — into gpu-carry/bin.tar.xz (git-ignored; ≈ 19 MiB of the 64 MiB one
# device run may take along).
#
#   bench/gpu/prepare.sh        then: run with carry ["gpu-carry"]: bash bench/gpu/check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
VENV="${STATESPACE_TORCH_VENV:-$HOME/.cache/statespace/torch-venv}"
export PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statespace-target}"
out=gpu-carry/bin
rm -rf gpu-carry && mkdir -p "$out"
cargo build --locked -p statespace-cli --features torch
cargo build --locked -p statespace-torch --example kernel_memory
cp "$CARGO_TARGET_DIR/debug/statespace" "$CARGO_TARGET_DIR/debug/examples/kernel_memory" "$out/"
# the test binaries: cargo names them by hash; its JSON messages say which is which
cargo test --locked -p statespace-torch --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$out"
strip --strip-debug "$out"/*
ls -l "$out"
# 96 MiB stripped: compressed (≈ 19 MiB) to fit a device run's 64 MiB; check.sh unpacks it
tar -C gpu-carry -cf - bin | xz -T2 -6 > gpu-carry/bin.tar.xz
rm -rf "$out"
# the Python package (abi3 wheel, ≈ 6 MiB; libtorch is the device's own torch's)
(cd python && maturin build --release --locked --out "$root/gpu-carry")
du -sh gpu-carry
