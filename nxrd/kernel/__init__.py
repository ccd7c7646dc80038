"""The only code that touches /sys, /proc, NVML, netlink and fork/exec."""
