#!/bin/sh
# Installs redis-server from Debian's packages when it is missing: the Redis state store's tests
# start a real server (tests/serving/redis_server.py). Needs root (or sudo) on a fresh machine;
# does nothing when redis-server is already on PATH.
set -eu
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis.sh: redis-server is missing and apt-get is not available; install Redis by hand" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-redis.sh: redis-server is missing and installing it needs root; Redis tests will be skipped" >&2
        exit 0
    fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
