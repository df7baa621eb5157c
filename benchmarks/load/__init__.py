"""Load benchmark of the arena in service mode: `python -m benchmarks.load [--quick]`."""
