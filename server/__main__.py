"""``python -m server``: read the settings, run the app."""

from server.cli import main

main()
