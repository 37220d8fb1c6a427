"""Sub-commands of this stage (being built)."""


def register(subparsers) -> None:
    pass
