"""Build stages: each takes a plan's inputs and makes one content-addressed artifact."""
