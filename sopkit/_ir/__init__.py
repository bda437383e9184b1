"""Stage 2, compile: a checked playbook -> RuleIR, plain typed data (`compile`), and the reference
semantics of its conditions (`semantics`). Pure; no engine import."""
