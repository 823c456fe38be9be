"""Prefect tasks: thin wrappers over antelope_ha, with retries, timeouts and
names an operator reads in the UI."""
