"""Fuzz suites: Hypothesis over what users write (manifests, constraints, graphs, configs).

Each test feeds a public function input that is well-formed, oddly typed or random, and
allows only the errors that function documents: anything else propagates and fails the test.
Every input is bounded in size, so no example can take long; deadlines stay off (conftest).
"""
