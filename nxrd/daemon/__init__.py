"""The daemon: its composition root (core), the `nxrd` command line (command) and one module
per job the running nxrd does (reconfigure, adopt, gpu_watch, readings, pids, sinks, view)."""
