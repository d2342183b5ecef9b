"""The `connscope` command line: trace and check."""
