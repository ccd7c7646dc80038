"""nxr as a Kubernetes node agent: the latency controller over the kubelet's pods
(docs/kubernetes.md)."""
