"""The process tier: plugins in a confined child process (see DESIGN.md, decision 9)."""
