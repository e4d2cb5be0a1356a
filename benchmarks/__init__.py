"""shmdict's benchmark suite against its peers: ``python -m benchmarks [--quick]``."""
