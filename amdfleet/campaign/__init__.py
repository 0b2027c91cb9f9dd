"""Benchmark campaigns: run a matrix of stacks, collect results, report them."""
