"""casemgr's benchmarks: the figures of SPEC §8, measured against baselines in the same run.

``python -m benchmarks`` (``make bench``) runs the quick sizes; ``--full`` (``make
bench-full``) the sizes SPEC §8 names. Results go to ``var/bench/results.json``.
"""
