"""nxrctl."""
