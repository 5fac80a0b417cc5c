"""adstack: a feature-store-centric ads ML platform."""

__version__ = "0.1.0"
