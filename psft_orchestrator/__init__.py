"""psft-orchestrator: declarative post-training pipelines."""

__version__ = "0.1.0"
