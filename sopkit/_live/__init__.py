"""Stage 4b, live: the store (state + outbox), the loop behind `sopkit run`, the dispatcher that
hands due rows to channels, and deploys of a new playbook version (`migrate`, `upgrade`)."""
