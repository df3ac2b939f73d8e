"""Policies around the request lifecycle: audit, deploy windows and freezes, locks, metric gates,
automatic revert PRs (issue 14). Pure rules live in `rules`, state in the store, and the one service
the rest of opsbot calls is `engine.Policies`."""
