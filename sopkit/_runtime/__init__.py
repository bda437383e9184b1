"""Stage 3, run: events and time in, actions out (docs/architecture.md).

`runtime` is the public `Runtime`, a facade over: `inputs` (records checked and typed),
`core` (one customer stepped through its events and wake-ups), `facts` (the facts vector the
engine sees), `actions` (the action path rules and campaigns share, with the `policy`
pipeline), `coordinator` (the one clock: wake-ups, RFM/CLV refits, `firings` of campaigns,
hand-overs), `observe` (observers), `population` (what the parts share), `records` (the
records they make and hold). Metrics and windows (`metrics`, `windows`), RFM/CLV facts
(`clvfacts`), the state as documented data (`state`, `codec`, `embed`), and campaign previews
and results for the commands (`campaigns`)."""
