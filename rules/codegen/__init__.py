"""Generating Python from type-checked rulesets: ``expressions`` compiles one rule-engine expression with
the interpreter's exact semantics; ``rulesets`` fuses a ruleset (or a chain of them) into one function."""
