"""Multi-host tests: RPC hosts as Linux network namespaces (needs root)."""
