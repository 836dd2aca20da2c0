#!/bin/sh
# Installs a Debian package when the command it provides is missing: the suite starts the real server or
# engine a feature needs (redis-server, the JVM under Spark), never a mock. Needs root (or sudo) on a
# fresh machine; does nothing when the command is already on PATH.
#
#   install-debian-package.sh COMMAND PACKAGE WHAT-FAILS-WITHOUT-IT
set -eu
command_name=$1
package=$2
consequence=$3
if command -v "$command_name" >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install $package: $command_name is missing and apt-get is not available; install $package by hand" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install $package: $command_name is missing and installing it needs root; $consequence" >&2
        exit 0
    fi
fi
$SUDO apt-get update -qq
# Some packages' post-install scripts (the JRE's) expect the man page folders that slim images leave out.
$SUDO mkdir -p /usr/share/man/man1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
