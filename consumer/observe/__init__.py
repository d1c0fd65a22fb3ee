"""Observation of the pipeline: lag, health, ops alerts, summaries, metrics, the sidecar API.

Everything here reads the pipeline's published view and ledger; nothing here writes data.
"""
