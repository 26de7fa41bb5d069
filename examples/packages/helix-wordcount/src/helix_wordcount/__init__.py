"""An installable helixhooks plugin: found through its entry point, never imported to be listed."""
