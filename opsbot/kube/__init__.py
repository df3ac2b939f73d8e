"""Everything opsbot does with a Kubernetes API server, and the only package importing `kubernetes`.

`client` (which clusters, credentials, reading raw JSON), `watcher` (list/watch of one resource kind),
`lease` (leader election), `live` (the live side of `status`). What a Flux or Argo CD object's status
means is intake's business (`opsbot.intake.agent_events`), passed in as a function.
"""
