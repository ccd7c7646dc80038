"""The request front of served workloads: HAProxy's configuration, rendered from the
profile (pure), and its runtime API (docs/front.md)."""
