"""The health-data wire contract (schema v1) and the normalized record the consumer stores.

By responsibility: `schemas.reading` the pydantic models of what watches and gateways
send (the contract and its one field table), `schemas.clean` what each value may be and
becomes, `schemas.jsonschema` how the published schema spells it, `schemas.envelope` the
envelope walk (shared with the gateway), `schemas.fast` the typed fast path,
`schemas.decode` the bytes -> records step that joins them, `schemas.record` the
`HealthRecord` every later stage works with, `schemas.export` the published JSON Schema
file and `schemas.publish` a producer helper for gateways and tools. Submodules are
imported lazily by callers, so `import schemas.record` does not pull in pydantic or
confluent_kafka.
"""

SCHEMA_VERSION = 1
