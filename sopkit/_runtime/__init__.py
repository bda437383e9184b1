"""Stage 3, run: events and time in, actions out.

One customer's state stepped through events and wake-ups (`runtime`, `metrics`, `windows`), the
policy pipeline every planned message goes through (`policy`), campaigns, RFM/CLV facts, and the
state as documented data (`state`, `codec`, `embed`)."""
