"""The process tier: plugins in a confined child process (wire protocol, worker, confinement)."""
