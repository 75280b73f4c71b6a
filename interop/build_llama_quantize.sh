#!/usr/bin/env bash
# Builds llama.cpp's llama-quantize and libggml-base (what interop/make_gguf_kquant_goldens.py runs), llama-imatrix
# and llama-tokenize (interop/make_imatrix_goldens.py, tests/test_imatrix.py) outside the repository: never committed (MIT). Source: $LLAMA_CPP_SRC_TREE, a llama.cpp checkout (default: the snapshot the
# committed goldens came from, exported from the mirror's git directory). Output: $LLAMA_CPP_BUILD (default
# ~/.cache/mixtune/llama.cpp-build) with bin/llama-quantize, bin/llama-imatrix, bin/llama-tokenize,
# bin/libggml-base.so and SNAPSHOT naming the source. 2 cores: about 25 minutes (llama-quantize links libllama and
# llama-common; the other two then take a minute).
set -euo pipefail

mirror="${LLAMA_CPP_MIRROR:-/work/.mirror/Manohar20006+siphon.cpp/repo}"
build="${LLAMA_CPP_BUILD:-$HOME/.cache/mixtune/llama.cpp-build}"
src="${LLAMA_CPP_SRC_TREE:-}"
if [[ -z "$src" ]]; then
  src="$(mktemp -d)/llama.cpp"
  mkdir -p "$src"
  # one path at a time: vendor/miniaudio's blob is missing from the mirror, and llama-quantize does not need it
  paths="$(git --git-dir="$mirror" ls-tree --name-only HEAD) $(git --git-dir="$mirror" ls-tree --name-only HEAD vendor/)"
  for path in $paths; do
    [[ "$path" == vendor || "$path" == vendor/miniaudio ]] && continue
    git --git-dir="$mirror" archive HEAD "$path" | tar -x -C "$src"
  done
  snapshot="github:Manohar20006/siphon.cpp@$(git --git-dir="$mirror" rev-parse HEAD)"
else
  snapshot="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo "$src")"
fi
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" --target llama-quantize llama-imatrix llama-tokenize -j2
echo "$snapshot (GGML_NATIVE=OFF, Release)" > "$build/SNAPSHOT"
echo "built $build/bin/llama-quantize, llama-imatrix and llama-tokenize from $snapshot"
