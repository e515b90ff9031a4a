"""The site agent: polls SNMP devices, detects state changes at the edge, publishes over MQTT."""
