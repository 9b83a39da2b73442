"""Rulesets: the file format, loading, type-checking and compiling of rule-engine expressions."""
