"""Stress suites: the lifecycle under concurrent hook calls, as a Hypothesis state machine."""
