#!/bin/sh
# Installs a Java runtime (Debian's openjdk-17-jre-headless) when `java` is missing: the Spark training
# engine's tests run pyspark in local mode (tests/training/spark/), and Spark runs on the JVM.
exec "$(dirname "$0")/install-debian-package.sh" java openjdk-17-jre-headless "Spark tests will fail"
