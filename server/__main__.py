"""``python -m server``: read the settings, run the app; ``python -m server export``: export."""

from server.cli import main

if __name__ == "__main__":  # not when an export worker process imports this as __mp_main__
    main()
