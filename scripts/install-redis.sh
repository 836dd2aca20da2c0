#!/bin/sh
# Installs redis-server from Debian's packages when it is missing: the Redis state store's and the shared
# event log's tests start a real server (tests/serving/redis_server.py).
exec "$(dirname "$0")/install-debian-package.sh" redis-server redis-server "Redis tests will be skipped"
