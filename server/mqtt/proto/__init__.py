"""The Sparkplug B payload schema and the Python module protoc generates from it."""
