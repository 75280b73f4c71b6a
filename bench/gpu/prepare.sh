#!/usr/bin/env bash
# Builds what bench/gpu/run.sh needs on a machine without Java or network, into bench/gpu/dist/ (git-ignored):
#   runtime/   a jlink Java 17 runtime with only the modules the jars use (jdeps; java.desktop draws loss.png)
#   mixtune.jar and lib/   the runnable jar and its dependencies, without pytorch-native-cpu (the device gives its own
#              libtorch through PYTORCH_LIBRARY_PATH) and with only the linux-x86_64 natives of the tokenizers and
#              pytorch-jni jars (the latter keeps its cpu and cu128 JNIs)
#   djl-jni/   DJL 0.35.1's PyTorch JNI source with its javac-generated header and the JDK's jni.h, for build-jni.sh
#              should the jar's prebuilt JNI not work with the device's torch (from DJL_GIT, a clone of
#              github.com/deepjavalibrary/djl, else fetched from GitHub; skipped, with a message, when neither works)
#   jni-prebuilt/   with PREBUILT_JNI_TORCH=a torch/lib folder (say pip's torch 2.14.1+cu130 for a device with a CUDA 13
#              torch): DJL's JNI built against that torch by build-jni.sh, for run.sh to try on a device without g++
#              (a JNI built against 2.14.1 ran torch 2.13.0 here; an older torch may lack a symbol it needs: the
#              probe tells)
# and packs them as bench/gpu/dist.tar.gz (git-ignored too), which is what travels: run.sh unpacks it on the device.
# Run it here (Java 17 with jlink and jmods). Prints the sizes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dist="$root/bench/gpu/dist"
cd "$root"
bin/mixtune --help >/dev/null 2>&1 || true   # (re)builds trainer/target/mixtune.jar when a source changed
test -f trainer/target/mixtune.jar
rm -rf "$dist"
mkdir -p "$dist/lib"
cp trainer/target/mixtune.jar "$dist/"
for jar in trainer/target/lib/*.jar; do
  case "$(basename "$jar")" in pytorch-native-cpu-*) continue ;; esac
  cp "$jar" "$dist/lib/"
done
zip -q -d "$dist"/lib/tokenizers-*.jar 'native/lib/osx-*' 'native/lib/win-*' 'native/lib/linux-aarch64/*'
zip -q -d "$dist"/lib/pytorch-jni-*.jar 'jnilib/osx-*' 'jnilib/win-*' 'jnilib/linux-aarch64/*'

# jdeps names java.base, java.compiler, java.desktop, java.logging, java.management for these jars (jar by jar:
# commons-compress's module descriptor stops a run over all of them); java.sql for jackson-databind's optional date
# support, jdk.unsupported for sun.misc.Unsafe (JNA, Jackson), jdk.crypto.ec for HTTPS should --allow-download be used.
modules="java.base,java.compiler,java.desktop,java.logging,java.management,java.sql,jdk.unsupported,jdk.crypto.ec"
jlink --add-modules "$modules" --strip-debug --no-header-files --no-man-pages --compress=2 --output "$dist/runtime"
strip --strip-unneeded "$dist/runtime/lib/server/libjvm.so"   # Debian ships it with symbols: 24 MB -> 20 MB
"$dist/runtime/bin/java" -version 2>&1 | head -1
djl_git="${DJL_GIT:-/work/.mirror/deepjavalibrary+djl/repo}"
if [ ! -d "$djl_git" ]; then
  djl_git="$(mktemp -d)/djl.git"
  git clone -q --bare --depth 1 --branch v0.35.1 https://github.com/deepjavalibrary/djl "$djl_git" \
    || { echo "prepare: no DJL source (set DJL_GIT to a clone of deepjavalibrary/djl): build-jni.sh will not work" >&2
         djl_git=""; }
fi
if [ -n "$djl_git" ]; then
  jni="$dist/djl-jni"
  mkdir -p "$jni/jni-include/linux"
  git --git-dir="$djl_git" archive v0.35.1 engines/pytorch/pytorch-native/src/main/native api/src/main/native \
    engines/pytorch/pytorch-engine/src/main/java/ai/djl/pytorch/jni | tar -x -C "$jni"
  engine_src="$jni/engines/pytorch/pytorch-engine/src/main/java"
  javac -h "$jni/engines/pytorch/pytorch-native/build/include" -d "$(mktemp -d)" -cp "$dist/lib/*" \
    -sourcepath "$engine_src" "$engine_src/ai/djl/pytorch/jni/PyTorchLibrary.java"
  rm -rf "$jni/engines/pytorch/pytorch-engine"
  java_home="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  cp "$java_home/include/jni.h" "$jni/jni-include/"
  cp "$java_home/include/linux/jni_md.h" "$jni/jni-include/linux/"
fi
if [ -n "${PREBUILT_JNI_TORCH:-}" ] && [ -d "$dist/djl-jni" ]; then
  build="$(mktemp -d)"
  # its own engine cache: the build installs its JNI there, not in ~/.djl.ai where DJL would use it here
  ENGINE_CACHE_DIR="$build/cache" PYTORCH_LIBRARY_PATH="$PREBUILT_JNI_TORCH" bench/gpu/build-jni.sh "$build/jni" >/dev/null
  mkdir -p "$dist/jni-prebuilt"
  strip --strip-unneeded -o "$dist/jni-prebuilt/libdjl_torch.so" "$build/jni/libdjl_torch.so"
  cp "$build/jni/built-for" "$dist/jni-prebuilt/"
  rm -rf "$build"
  echo "prepare: jni-prebuilt/ for $(cat "$dist/jni-prebuilt/built-for")"
fi
tar -C "$dist/.." -czf "$root/bench/gpu/dist.tar.gz" dist
echo "bench/gpu/dist: $(du -sh "$dist" | cut -f1) (runtime $(du -sh "$dist/runtime" | cut -f1), jars" \
  "$(du -shc "$dist"/mixtune.jar "$dist"/lib/*.jar | tail -1 | cut -f1)); bench/gpu/dist.tar.gz, what travels:" \
  "$(du -sh "$root/bench/gpu/dist.tar.gz" | cut -f1)"
