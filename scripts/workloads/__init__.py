"""The torture workloads, one module each, on the harness in harness.py."""
