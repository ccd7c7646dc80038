"""Profiles rendered for other engines: Kubernetes manifests (docs/kubernetes.md)."""
