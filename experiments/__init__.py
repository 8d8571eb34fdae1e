"""Experiments that need a checkout: outside the installed package and the default test run (testpaths)."""
