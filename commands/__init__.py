"""The explicit command registry: one module per command, listed here in help order."""

from __future__ import annotations

from commands import (
    approve,
    audit,
    cancel,
    create,
    deploy,
    freeze,
    help,
    history,
    lock,
    merge,
    policies,
    promote,
    rollback,
    scale,
    status,
    unfreeze,
    unlock,
)
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
        freeze.COMMAND,
        unfreeze.COMMAND,
        lock.COMMAND,
        unlock.COMMAND,
        policies.COMMAND,
        audit.COMMAND,
        help.COMMAND,
    ]
)
