"""Benchmarks of the worker, run by `make bench` (`python -m bench.ingest`).

Every figure is a ratio against a bare baseline measured in the same run on the same data:
absolute rates on these shared 2-core machines move by tens of percent between runs, so
only a comparison made side by side means anything (see MEASURED.md).

Layout: `ingest` orchestrates (broker, databases, data, repeats, report); each measurement
runs in its own child process (`baseline`, `worker`) so that its peak RSS is its own;
`common` is what parent and children share, kept free of the worker's imports so that the
baseline's memory is the bare minimum.
"""
