"""Stage 4a, offline: a history replayed on a virtual clock (`simulate`) and what is read from it:
one customer's timeline (`explain`), a change's effect (`diff`), a campaign's result (`review`),
an HTML report."""
