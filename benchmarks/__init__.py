"""joblog's benchmark harness: ``python -m benchmarks run [--smoke|--full]`` (see BENCHMARKS.md)."""
