"""Benchmark campaigns: the campaign file, its runner and the results it writes, the
report, and TTL enforcement (``amdfleet reap``)."""
