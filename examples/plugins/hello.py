"""A single-file plugin: discovery reads PLUGIN_INFO with ast and never runs this file."""

import helixhooks as hh

PLUGIN_INFO = {
    "name": "hello",
    "version": "0.1.0",
    "description": "Greets people",
    "capabilities": ["greet"],
}


@hh.hookimpl
def greet(name):
    return f"hello, {name}"
