"""Benchmark campaigns: a matrix of stacks run, reported on and torn down together."""
