"""Benchmark campaigns: several stacks, the same sweeps on each, one report, torn down."""
