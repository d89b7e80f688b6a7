"""Schools and classes: the organisational frame every record hangs on."""
