"""Work on hosts: ``transport`` does the I/O (ssh, local, the fan-out); ``facts`` are
commands beside their pure parsers; the other modules build commands, parse what they
print and check collected facts, without doing I/O."""
