"""The daemon: its composition root (core), the `nxrd` command line (command) and one module
per job the running nxrd does (reconfigure, adopt, gpu_watch, events, readings, pids)."""

DEFAULT_STATE_DIR = "/var/lib/nxr"
