#!/usr/bin/env bash
# The README's test command: the Rust tests (one release build), then the Python package's
# tests in a virtual environment this script makes (target/venv; SPARSECODE_VENV to choose
# another), with the package built from this checkout by pip through maturin.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The `mpi` feature (training across processes, tested under `mpirun -np 2`) where Open MPI's
# compiler wrapper and libclang are installed (Debian: libopenmpi-dev openmpi-bin
# libclang-dev); SPARSECODE_REQUIRE_MPI=1 (CI) makes their absence a failure.
features=()
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 \
  && ldconfig -p | grep -q 'libclang[-.]'; then
  features=(--features sparsecode-cli/mpi)
elif [ -n "${SPARSECODE_REQUIRE_MPI:-}" ]; then
  echo "SPARSECODE_REQUIRE_MPI is set but Open MPI or libclang is missing" >&2
  exit 1
else
  echo "note: Open MPI or libclang not installed; the MPI tests are skipped" >&2
fi

cargo test --release --workspace "${features[@]}"
# The Python tests compare the package with the CLI binary (built above with the workspace's
# features: building the one package alone would unify features differently and rebuild).
cargo build --release -q --workspace "${features[@]}"
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
