"""The demo machine server: the I/O around the simulation (settings, ticker, store, hub, API)."""

__version__ = "0.1.0"
