"""The playbook's little languages and time: conditions (`expr`), message templates, campaign
schedules (`cron`) and calendar arithmetic in the playbook's timezone (`clock`).

Nothing here evaluates user text: each language is parsed and type-checked."""
