#!/usr/bin/env bash
# Create (or reuse) the project's Python environment and link it as .venv.
#
# The environment is ~9 GB, so it lives outside the clone, keyed by the hash of the pinned
# requirements: a fresh clone on a machine that built it before is ready in seconds, and a
# change to requirements/cpu.txt builds a new one. Only the project itself is (re)installed
# into it, in editable mode, when the clone it points at changes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$root/requirements/cpu.txt"
python=${PSFT_PYTHON:-python3.11}
cache=${PSFT_ENV_CACHE:-$HOME/.cache/psft-orchestrator}
key=$( (cat "$lock"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
env="$cache/venv-$key"

mkdir -p "$cache"
exec 9>"$cache/venv-$key.lock"
if ! flock -n 9; then
  echo "setup: another process is building $env; waiting for it..." >&2
  flock 9
fi

if [ ! -f "$env/.complete" ]; then
  echo "setup: building the environment in $env (first time on this machine: about 5 minutes)" >&2
  rm -rf "$env"
  "$python" -m venv "$env"
  "$env/bin/python" -m pip install --quiet --upgrade "pip==25.3"
  # The machine-wide pip config may cap torch; our pins are below it.
  # (grep drops the machine pip config's warnings about absent local indexes)
  "$env/bin/python" -m pip install --quiet --no-input -r "$lock" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "setup: pip install failed" >&2; exit 1; }
  touch "$env/.complete"
fi

# Point the shared environment at this clone (editable install, no dependencies).
if [ "$(cat "$env/.project-root" 2>/dev/null)" != "$root" ] || [ "$root/pyproject.toml" -nt "$env/.project-root" ]; then
  "$env/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  echo "$root" > "$env/.project-root"
fi

# .venv in the clone is a link to the shared environment.
if [ "$(readlink "$root/.venv" 2>/dev/null)" != "$env" ]; then
  rm -rf "$root/.venv"
  ln -s "$env" "$root/.venv"
fi
