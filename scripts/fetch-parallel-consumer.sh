#!/usr/bin/env bash
# Resolve Confluent Parallel Consumer (pinned) and its runtime classpath from Maven Central into the
# lagpilot cache, plus slf4j-simple (warnings only), and compile bench/consumer/peer/PcHttpSink.java
# against it into a classes dir keyed by the source's sha256. Quick when warm.
# Last line on stdout: the java classpath to run PcHttpSink with ("CLASSES_DIR:LIBS_DIR/*").
set -euo pipefail
cd "$(dirname "$0")/.."
PC_VERSION=0.5.3.2
SLF4J_VERSION=2.0.13  # the slf4j-api that parallel-consumer-core $PC_VERSION pulls in
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
out=$CACHE/parallel-consumer-$PC_VERSION
src=bench/consumer/peer/PcHttpSink.java
say() { echo "[fetch-parallel-consumer] $*" >&2; }

if [ -f "$out/libs/.complete" ]; then
  say "parallel-consumer $PC_VERSION cached at $out/libs"
else
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.lagpilot.lab</groupId><artifactId>parallel-consumer-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>io.confluent.parallelconsumer</groupId><artifactId>parallel-consumer-core</artifactId><version>$PC_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  say "resolving parallel-consumer-core:$PC_VERSION and its runtime classpath from Maven Central"
  rm -rf "$out/libs"; mkdir -p "$out/libs"
  mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs" >&2
  touch "$out/libs/.complete"
  say "parallel-consumer ready: $(ls "$out/libs" | wc -l) jars in $out/libs"
fi

hash=$(sha256sum "$src" | cut -c1-12)
classes=$out/classes-$hash
if [ -f "$classes/.complete" ]; then
  say "PcHttpSink compiled at $classes"
else
  release=17
  javac_major=$(javac -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')
  [ "$javac_major" -lt 17 ] && release=$javac_major
  [ "$release" -lt 11 ] && { say "javac $javac_major is too old (need >= 11)"; exit 1; }
  say "compiling $src (--release $release)"
  tmp=$(mktemp -d "$out/.classes-XXXXXX")
  if ! javac -nowarn --release "$release" -cp "$out/libs/*" -d "$tmp" "$src" >&2; then rm -rf "$tmp"; exit 1; fi
  # slf4j-simple: warnings and errors only, to stderr (-D system properties still win)
  printf 'org.slf4j.simpleLogger.defaultLogLevel=warn\norg.slf4j.simpleLogger.logFile=System.err\norg.slf4j.simpleLogger.showDateTime=true\n' \
    > "$tmp/simplelogger.properties"
  rm -rf "$classes"; mv "$tmp" "$classes"
  touch "$classes/.complete"
fi
echo "$classes:$out/libs/*"
