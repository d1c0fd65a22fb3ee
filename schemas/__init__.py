"""The health-data wire contract (schema v1) and the normalized record the consumer stores.

`schemas.reading` holds the pydantic models of what watches and gateways send,
`schemas.record` the `HealthRecord` every later stage works with, `schemas.decode` the
bytes -> records step, `schemas.export` the published JSON Schema and `schemas.publish`
a producer helper for gateways and tools. Submodules are imported lazily by callers, so
`import schemas.record` does not pull in pydantic or confluent_kafka.
"""

SCHEMA_VERSION = 1
