"""The web console of `sopkit serve` (docs/console.md): pages for ops at `/`."""
