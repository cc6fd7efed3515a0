"""The test suite: one folder per layer of lib/ (tests/<layer>/), tests/e2e/ for runs of the entry points; shared fixtures in conftest.py, shared helpers in helpers.py."""
