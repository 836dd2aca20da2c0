#!/usr/bin/env bash
# Numba's on-disk cache (cache=True) is invalidated only by a change to the file that defines a
# compiled function, not by a change to a compiled function it calls from another module: after an
# edit of engine/personas/inference/e_step.py, the cached fold-in of fold_in.py would still run the old
# customer step. This script keeps one digest of every module that uses numba and, when any of them
# changed since the last run, removes every cached compilation so that the next run compiles afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.numba-sources.sha256
digest=$(grep -rl --include='*.py' 'numba' engine training serving | sort | xargs cat | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    find engine training serving -name '*.nbi' -delete -o -name '*.nbc' -delete
    echo "$digest" > "$stamp"
fi
