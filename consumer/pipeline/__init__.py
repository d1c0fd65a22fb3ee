"""The data path: message -> intake -> partition worker -> batch -> flush -> commit."""
