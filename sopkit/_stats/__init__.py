"""Population statistics rules read as facts: RFM breakpoints and scores, BG/NBD and Gamma-Gamma
customer-base models."""
