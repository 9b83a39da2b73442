"""Rulesets: parse → type-check → generate code.

The vocabulary rules are written against: ``fields`` (typed fields, wire values), ``entities``
(reference rows), ``item_kinds`` (items and their bindings). Parse: ``model`` (the file format),
``yaml_source`` (YAML with lines), ``loader`` (a directory, all or nothing). Type-check:
``typecheck`` (a ruleset into its compiled form). Generate code: ``codegen``. Then ``decisions``
(what a decision carries), ``problems`` (file:line errors) and ``lint``.
"""
