"""Placeholder: filled in by its owner."""


def add_parsers(sub) -> None:
    pass
