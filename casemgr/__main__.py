"""``python -m casemgr`` runs the command line."""

from casemgr.cli import main

main()
