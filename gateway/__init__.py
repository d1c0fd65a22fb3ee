"""healthstream ingest gateway: the legacy `POST /upload_health_data` endpoint, into Kafka.

Depends on `schemas` (the contract) only, never on `consumer`: the gateway is deployed
apart from the consumer and must keep working whatever the consumer's layout.
"""

__version__ = "0.1.0"
