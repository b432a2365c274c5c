"""Pure functions: a custom resource (as a dict) in, the desired child objects out. No I/O."""
