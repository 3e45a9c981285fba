#!/usr/bin/env bash
# Resolve the broker classpath of a pinned Apache Kafka release from Maven Central into the lagpilot
# cache (keyed by version). Later runs return at once.
set -euo pipefail
KAFKA_VERSION=${LAGPILOT_KAFKA_VERSION:-3.9.1}
SCALA_VERSION=2.13
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
out=$CACHE/kafka-$KAFKA_VERSION
if [ -f "$out/libs/.complete" ]; then echo "[fetch-kafka] kafka $KAFKA_VERSION cached at $out" >&2; exit 0; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.lagpilot.lab</groupId><artifactId>kafka-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$SCALA_VERSION</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-server</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
  </dependencies>
</project>
POM
echo "[fetch-kafka] resolving kafka_$SCALA_VERSION:$KAFKA_VERSION and its runtime classpath from Maven Central" >&2
rm -rf "$out/libs"; mkdir -p "$out/libs"
mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs" >&2
touch "$out/libs/.complete"
echo "[fetch-kafka] kafka ready: $(ls "$out/libs" | wc -l) jars in $out/libs" >&2
