"""The hook markers hosts and plugins decorate with; one project name ties them together."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "helixhooks"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
