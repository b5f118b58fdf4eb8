"""The `usgen` command line: one module per sub-command, each over the same library functions."""
