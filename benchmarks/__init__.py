"""
Benchmarks of the provider against the bundled emulator on loopback (``make bench``).

Each scenario measures this provider and a baseline built the way the HTTP provider's documentation
suggests, in the same run, so every comparison is a ratio of two numbers taken minutes apart on the
same machine. See ``docs/performance.md`` for what each number means.
"""
