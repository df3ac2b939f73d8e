"""The explicit command registry: one module per command, listed here in help order."""

from __future__ import annotations

from commands import approve, cancel, create, deploy, help, history, merge, promote, rollback, scale, status
from opsbot.core.registry import Registry

REGISTRY = Registry(
    [
        scale.COMMAND,
        promote.COMMAND,
        deploy.COMMAND,
        rollback.COMMAND,
        create.COMMAND,
        status.COMMAND,
        history.COMMAND,
        approve.COMMAND,
        merge.COMMAND,
        cancel.COMMAND,
        help.COMMAND,
    ]
)
