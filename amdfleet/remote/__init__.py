"""Pure command builders and fact parsers for remote hosts; ``ssh`` alone does I/O."""
