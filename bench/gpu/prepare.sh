#!/usr/bin/env bash
# Builds what bench/gpu/run.sh needs on a machine without Java or network, into bench/gpu/dist/ (git-ignored):
#   runtime/   a jlink Java 17 runtime with only the modules the jars use (jdeps; java.desktop draws loss.png)
#   mixtune.jar and lib/   the runnable jar and its dependencies, without pytorch-native-cpu (the device gives its own
#              libtorch through PYTORCH_LIBRARY_PATH) and with only the linux-x86_64 natives of the tokenizers and
#              pytorch-jni jars (the latter keeps its cpu and cu128 JNIs)
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
tar -C "$dist/.." -czf "$root/bench/gpu/dist.tar.gz" dist
echo "bench/gpu/dist: $(du -sh "$dist" | cut -f1) (runtime $(du -sh "$dist/runtime" | cut -f1), jars" \
  "$(du -shc "$dist"/mixtune.jar "$dist"/lib/*.jar | tail -1 | cut -f1)); bench/gpu/dist.tar.gz, what travels:" \
  "$(du -sh "$root/bench/gpu/dist.tar.gz" | cut -f1)"
