"""agentdb: the control plane's shared layer (config, crypto, store, providers, use cases)."""

__version__ = "0.1.0"
