"""opsbot: chat commands become minimal, validated GitOps pull requests."""

__version__ = "0.1.0"
