"""Options of nxrctl and nxrd themselves (--debug, --socket) read wherever they are given:
before the subcommand, as click wants them, or after it, where people also type them."""

from __future__ import annotations

import click

FLAGS = ("--debug",)
WITH_VALUE = ("--socket",)


def hoisted(args: list[str]) -> list[str]:
    """args with the command's own options moved in front of the subcommand."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is an argument
            rest += args[i:]
            break
        if arg in FLAGS or arg.startswith(tuple(f"{o}=" for o in WITH_VALUE)):
            front.append(arg)
        elif arg in WITH_VALUE and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


class Group(click.Group):
    """A click group whose own options may also follow its subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoisted(args))
