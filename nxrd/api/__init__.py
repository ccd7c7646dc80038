"""Control API: HTTP + JSON over a unix socket, versioned paths (docs/api.md)."""
