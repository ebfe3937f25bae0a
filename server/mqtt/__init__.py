"""Gateway mode: the plant published to an MQTT broker, commands taken from it
(``docs/mqtt.md``)."""
