"""Command line: `stream-app <command>`."""
