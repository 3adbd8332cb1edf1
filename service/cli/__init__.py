"""The command line (``genstream`` or ``python -m service``): parse, call one operation, exit.

Every command answers a user's mistake with one line on stderr that names what to fix, never
a traceback, and ends with the same exit codes:

    0   done
    1   failed, or the thing named does not exist
    2   usage: a wrong argument, or a bad environment value
    130 interrupted (Ctrl-C)

Commands that set a database up (``serve``, ``worker``, ``migrate``, ``keys create``,
``import`` but not ``import --dry-run``) bring its schema to head first; the ones that only
read or repair an existing log (``replay``, ``export``, ``rebuild``) leave the schema alone
and, if it is missing or behind, say to run ``migrate``: they never change the schema of a
database an operator points them at.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.cli.arguments import parser
from service.cli.commands import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from service.errors import GenstreamError
from service.observe import logs, traces
from service.settings import Settings, environment_variable


def settings_problems(error: ValidationError) -> list[str]:
    """Each bad environment value, named as the user set it (GENSTREAM_WORKER_CONCURRENCY,
    not worker_concurrency)."""
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = environment_variable(field) if field in Settings.model_fields else field
        problems.append(f"{name}={problem.get('input')!r}: {problem['msg']}")
    return problems


def main(argv: Sequence[str] | None = None, prog: str = "genstream") -> int:
    """The console script's entry point (``python -m service`` passes its own ``prog``)."""
    args = parser(prog).parse_args(argv)  # exits 2 with argparse's message on a usage error
    try:
        settings = Settings()
    except ValidationError as exc:
        for problem in settings_problems(exc):
            print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_format, settings.log_level)
    try:
        traces.configure(
            settings.otel_traces_exporter, settings.otel_exporter_otlp_endpoint, "genstream"
        )
    except ImportError as exc:
        print(
            f"{prog}: error: traces are configured (OTEL_*) but OpenTelemetry is not installed "
            f"({exc.name}): pip install 'genstream[otel]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        code: int = args.run(settings, args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GenstreamError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UnicodeDecodeError as exc:
        print(f"{prog}: error: the input is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a file named on the command line: missing, unreadable...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code
