#!/usr/bin/env bash
# Create or update .venv with FedGRPO and everything it needs. Safe to run again: it does nothing when
# the environment already matches pyproject.toml.
#
# torch goes in first: on a machine without an NVIDIA GPU that is the CPU build torch==2.13.0 (any
# package that pulls a bare `torch` first would fetch a CUDA build of several GB). An environment that
# already has a torch keeps it, so GPU users bring their own. Override with TORCH_SPEC="torch==X".
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
log=.venv-install.log
stamp=.venv/.fedgrpo-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/fedgrpo ]; then
  exit 0
fi

run() {  # run quietly; show the log's tail and fail if the step fails
  if ! "$@" >>"$log" 2>&1; then
    echo "bootstrap: step failed: $*" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}

: >"$log"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: FedGRPO needs Python 3.11 or newer (found $("$python_bin" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  }
  echo "bootstrap: creating .venv with $("$python_bin" --version)"
  run "$python_bin" -m venv .venv
fi
run .venv/bin/python -m pip install --upgrade pip
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then spec=$TORCH_SPEC
  elif command -v nvidia-smi >/dev/null 2>&1; then spec=torch
  else spec=torch==2.13.0
  fi
  echo "bootstrap: installing $spec (first, so nothing pulls another build)"
  run .venv/bin/python -m pip install "$spec"
fi
echo "bootstrap: installing fedgrpo and its dependencies (a few minutes the first time; log: $log)"
run .venv/bin/python -m pip install -e ".[dev]"
echo "$want" >"$stamp"
echo "bootstrap: ready (.venv)"
