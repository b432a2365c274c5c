"""Pure functions: observed children -> the custom resource's status (and, for the job-like
kinds, what to do next). No I/O: each is unit-tested as a table."""
