"""The Redis bus between one simulator and many web processes (``docs/scale-out.md``)."""
