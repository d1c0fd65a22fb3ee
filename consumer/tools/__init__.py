"""Tools around the pipeline: simulator, replica runner, dead-letter inspection and replay."""
