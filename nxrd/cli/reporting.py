"""How both commands turn errors into one line and an exit code."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from nxrd.errors import NxrError, ProfileError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1


def reported(func: F) -> F:
    """Print NxrError as its message lines on stderr and exit 1; --debug adds the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except ProfileError as e:
            for line in e.lines():
                click.echo(line, err=True)
            if debug:
                traceback.print_exc()
            sys.exit(EXIT_ERROR)
        except NxrError as e:
            click.echo(f"error: {e}", err=True)
            if debug:
                traceback.print_exc()
            sys.exit(EXIT_ERROR)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as e:  # a bug: still one line, the traceback on request
            if debug:
                traceback.print_exc()
            click.echo(f"internal error: {type(e).__name__}: {e} (run with --debug)", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]
