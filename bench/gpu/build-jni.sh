#!/usr/bin/env bash
# Builds DJL 0.35.1's PyTorch JNI (libdjl_torch.so) from its source against another libtorch, for when the jar's
# prebuilt 2.7.1 JNI does not work with the libtorch at hand (with pip's torch 2.13 it loads but creates no tensor;
# built here against 2.13.0+cpu in about 4 CPU minutes, it trains the quickstart to the same losses:
# bench/gpu/README.md).
# The source comes from bench/gpu/dist/djl-jni (prepare.sh exports it from github.com/deepjavalibrary/djl at v0.35.1
# with the JNI header javac generates; never committed). Compiled with g++ straight against torch's headers and
# libraries, without USE_CUDA (that define only adds inference CUDA streams and emptyCache) so no CUDA toolkit is
# needed. Installs it where DJL looks before its jar: ENGINE_CACHE_DIR (default ~/.djl.ai)/pytorch/
# VERSION-FLAVOR-linux-x86_64/0.35.1-libdjl_torch.so, and prints the PYTORCH_* exports that select it.
# Usage: bench/gpu/build-jni.sh [build dir, default /tmp/djl-jni-build]; PYTORCH_LIBRARY_PATH names torch/lib
# (default: python3's torch); JOBS (default nproc) compiles in parallel, about 1.5 GB of memory each.
# JNI_PREBUILT=FOLDER installs the libdjl_torch.so that prepare.sh built against another torch (FOLDER/built-for
# says which) for this torch's version and flavor instead of compiling: run.sh's fallback on a machine without g++.
# Measured here: built against 2.14.1+cu130, it trained the quickstart on torch 2.13.0+cpu as on 2.14.1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/bench/gpu/dist/djl-jni"
build="${1:-/tmp/djl-jni-build}"
[ -d "$src" ] || { [ -f "$root/bench/gpu/dist.tar.gz" ] && tar -C "$root/bench/gpu" -xzf "$root/bench/gpu/dist.tar.gz"; }
lib="${PYTORCH_LIBRARY_PATH:-$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib}"
torch_root="$(cd "$lib/.." && pwd)"
version="$(sed -n "s/^__version__[^'\"]*['\"]\([^'\"+]*\).*/\1/p" "$torch_root/version.py")"
cuda="$(sed -n "s/^cuda[^'\"]*['\"]\([0-9]*\)\.\([0-9]\).*/\1\2/p" "$torch_root/version.py")"
flavor="$([ -n "$cuda" ] && echo "cu$cuda" || echo cpu)"
# the C++ ABI libc10 was built with, from its symbols (no python needed): cxx11 names only with _GLIBCXX_USE_CXX11_ABI=1;
# without binutils' nm (a machine without g++ may lack it) from the names' text in the file
if command -v nm >/dev/null; then
  abi=$(( $(nm -D --defined-only "$lib/libc10.so" | grep -c cxx11 || true) > 0 ))
else
  abi=$(( $(grep -a -c __cxx11 "$lib/libc10.so" || true) > 0 ))
fi
cache="${ENGINE_CACHE_DIR:-${DJL_CACHE_DIR:-$HOME/.djl.ai}}/pytorch/$version-$flavor-linux-x86_64"
if [ -n "${JNI_PREBUILT:-}" ]; then
  built_for="$(cat "$JNI_PREBUILT/built-for")"
  # a JNI compiled for the other C++ ABI fails on its first std::string; refuse it here rather than in the JVM
  [[ "$built_for" == *"cxx11 abi $abi"* ]] || { echo "build-jni: $JNI_PREBUILT is built for $built_for, but" \
    "torch $version here has cxx11 abi $abi" >&2; exit 2; }
  mkdir -p "$cache"
  cp "$JNI_PREBUILT/libdjl_torch.so" "$cache/0.35.1-libdjl_torch.so"
  echo "build-jni: installed the JNI built for $built_for as $cache/0.35.1-libdjl_torch.so (torch $version here);" \
    "select it with:" >&2
  echo "export PYTORCH_LIBRARY_PATH=$lib PYTORCH_VERSION=$version PYTORCH_FLAVOR=$flavor"
  exit 0
fi
[ -d "$src" ] || { echo "build-jni: no DJL JNI source in $src (run bench/gpu/prepare.sh)" >&2; exit 2; }
native="$src/engines/pytorch/pytorch-native"
# C++20: torch 2.13's headers use it (default member initializers of bit-fields; C++17 compiles them with warnings);
# DJL's source compiles as C++20 too. CXX_STD=c++17 for a compiler older than g++ 10.
std="${CXX_STD:-c++20}"
echo "build-jni: DJL 0.35.1 JNI against torch $version ($flavor, cxx11 abi $abi, $std) in $torch_root" >&2
start=$SECONDS
rm -rf "$build" && mkdir -p "$build"
flags=(-std="$std" -O2 -fPIC -D_GLIBCXX_USE_CXX11_ABI="$abi" -I"$native/build/include" -I"$src/jni-include"
  -I"$src/jni-include/linux" -I"$src/api/src/main/native" -I"$torch_root/include"
  -I"$torch_root/include/torch/csrc/api/include")
ls "$native"/src/main/native/*.cc | xargs -P "${JOBS:-$(nproc)}" -I{} sh -c \
  'g++ "$@" -c "{}" -o "'"$build"'/$(basename "{}" .cc).o"' _ "${flags[@]}"
# --no-as-needed keeps libtorch.so (which pulls in libtorch_cuda in a CUDA build) among the JNI's dependencies;
# --no-undefined fails here, not at a call in the JVM, on a symbol torch lacks (a wrong ABI above: Java loads the
# JNI lazily; built with ABI 0 against torch 2.13 it loaded and ran `generate`, and linking it so names 72 symbols)
g++ -shared -o "$build/libdjl_torch.so" "$build"/*.o -L"$lib" -Wl,-rpath,"$lib" -Wl,--no-undefined \
  -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10
echo "build-jni: compiled and linked in $((SECONDS - start)) s with ${JOBS:-$(nproc)} jobs" >&2
echo "torch $version ($flavor, cxx11 abi $abi)" > "$build/built-for"
mkdir -p "$cache"
cp "$build/libdjl_torch.so" "$cache/0.35.1-libdjl_torch.so"
echo "build-jni: installed $cache/0.35.1-libdjl_torch.so; select it with:" >&2
echo "export PYTORCH_LIBRARY_PATH=$lib PYTORCH_VERSION=$version PYTORCH_FLAVOR=$flavor"
