"""healthstream consumer: Kafka -> MySQL/Redis for wearable health telemetry."""

__version__ = "0.1.0"
