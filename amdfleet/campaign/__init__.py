"""Benchmark campaigns: the campaign file and its runner, the report, and TTL enforcement
(``amdfleet reap``)."""
