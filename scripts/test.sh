#!/usr/bin/env bash
# The README's test command: the Rust tests (one release build), then the Python package's
# tests in a virtual environment this script makes (target/venv; SPARSECODE_VENV to choose
# another), with the package built from this checkout by pip through maturin.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cargo test --release --workspace
# The Python tests compare the package with the CLI binary (built above with the workspace's
# features: building the one package alone would unify features differently and rebuild).
cargo build --release -q --workspace
export SPARSECODE_BIN="$root/target/release/sparsecode"

venv="${SPARSECODE_VENV:-$root/target/venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv"; then
    # Debian splits venv out of python3.
    apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$root/crates/python[test]"
"$venv/bin/python" -m pytest -q "$root/crates/python/tests"
# The example a README points at must run.
"$venv/bin/python" "$root/examples/python/hook_to_store_to_sae.py" >/dev/null
