"""The command line: thin commands over the stages below."""
