"""Events -> messages and the outbox that delivers them (Slack threads, the deploy channel, the console).

`outbox`: the durable queue and its worker; `messages`: what each request event says.
"""
