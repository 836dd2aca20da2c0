"""Settings of polars' memory allocator for the processes that train and serve (set before polars loads).

Kept apart from ``cli.main`` so that other entry points (the benchmarks' build process) set the same
thing, and so that importing it loads nothing else.
"""

from typing import Final

ALLOCATOR_SETTINGS_VARIABLE: Final = "_RJEM_MALLOC_CONF"  # polars' jemalloc reads its options here
ALLOCATOR_SETTINGS: Final = "narenas:1"
