#!/bin/sh
# Installs a Java runtime (Debian's openjdk-17-jre-headless) when `java` is missing: the Spark training
# engine's tests run pyspark in local mode (tests/training/spark/), and Spark runs on the JVM. Needs root
# (or sudo) on a fresh machine; does nothing when java is already on PATH.
set -eu
if command -v java >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-java.sh: java is missing and apt-get is not available; install OpenJDK 17 by hand" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-java.sh: java is missing and installing it needs root; Spark tests will fail" >&2
        exit 0
    fi
fi
$SUDO apt-get update -qq
# The JRE's post-install scripts expect the man page folders that slim images leave out.
$SUDO mkdir -p /usr/share/man/man1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
