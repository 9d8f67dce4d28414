"""loopthread's benchmarks. `python -m perf` runs them all and prints one report."""
