"""Case-study runners of the benchmark domain."""
