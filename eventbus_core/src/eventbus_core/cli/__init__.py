"""The `eventbus` command line.

Each sub-command lives in its own module exposing `add_parser(subparsers)`, which registers the
command and sets `func(args) -> int` as its handler; `COMMANDS` lists those modules in the
order `--help` shows them.

Errors: eventbus's own (`EventBusError`) are the user's to fix and are printed as one line:
exit 2 for a usage or configuration mistake, 1 when the backend does not answer or something
else failed. Anything else is a bug in eventbus or a plugin: one line saying so (the traceback
with -v), exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from eventbus_core._errors import (
    BackendLoadError,
    EventBusError,
    MissingDependencyError,
    SettingsError,
    UnknownBackendError,
    UnknownSinkError,
)
from eventbus_core._log import ScrubFilter, scrub
from eventbus_core._plugins import PluginLoadWarning, plugin_at_fault
from eventbus_core.cli._ending import ending_now
from eventbus_core.cli._ops import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    UsageError,
    in_command_line_terms,
    stdout_gone,
)
from eventbus_core.cli._stdout import StdoutFailed, guarded_stdout, write_failed
from eventbus_core.cli._version import VersionAction

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["build_parser", "main"]

COMMANDS: Final = (
    "eventbus_core.cli._plugins_cmd",
    "eventbus_core.cli._demo_cmd",
    "eventbus_core.cli._tail_cmd",
    "eventbus_core.cli._publish_cmd",
    "eventbus_core.cli._stats_cmd",
    "eventbus_core.cli._replay_cmd",
    "eventbus_core.cli._dispatch_cmd",
)

_CONFIGURATION_ERRORS: Final = (
    UsageError,
    SettingsError,
    UnknownBackendError,
    UnknownSinkError,
    BackendLoadError,
    MissingDependencyError,
)
"""Mistakes in the command line, the environment or the installation: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "expected one argument" also says how to give a value that
    starts with '-' (`--since -5m` read the value as an option and said only that)."""

    def error(self, message: str) -> NoReturn:
        flag = _MISSING_VALUE.fullmatch(message)
        if flag is not None:
            given = _value_after(flag.group(1))
            if given is not None and _NEGATIVE_AGE.fullmatch(given):
                message += (
                    f" ({given!r} starts with '-', so it was read as an option; an age counts "
                    f"back from now and takes no sign: write {flag.group(1)} {given[1:]})"
                )
            elif given is not None:
                message += (
                    f" ({given!r} starts with '-', so it was read as an option: write "
                    f"{flag.group(1)}={given} to give it as the value)"
                )
        message += _misplaced_option_hint(message)
        super().error(message)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """argparse's, without its silence: it drops an `OSError` of the write, so `--help`
        to a full disk wrote nothing and exited 0 (trial 253). Here a failed write to stdout
        ends the command (exit 1); a reader that left (`| head`) is no failure."""
        out = file  # argparse names stdout (help) or stderr (errors): None when it is closed
        if not message or out is None:
            return  # a closed stdout is said once the parser is done (`_help_written`)
        try:
            out.write(message)
        except BrokenPipeError:
            raise  # handled as every command's: a quiet end
        except OSError as exc:
            if out is sys.stdout:
                raise write_failed(exc) from None


def _misplaced_option_hint(message: str) -> str:
    """A hint for an option typed on the wrong side of the command: `eventbus stats -v` (an
    option of eventbus itself) and `eventbus --backend redis stats` (an option of the
    command) got only argparse's "unrecognized arguments" and "invalid choice" (helper-108)."""
    typed = _typed
    command = next((w for w in typed if w in _COMMAND_OPTIONS), "COMMAND")
    before = typed[: typed.index(command)] if command in typed else []
    # Only options the command has (or, with no command typed, one of them has): a hint for
    # `--bogus` or `-q` sent the user to a place that failed too (helper-111).
    known = _COMMAND_OPTIONS.get(command) or frozenset().union(*_COMMAND_OPTIONS.values())
    unrecognized = _UNRECOGNIZED.fullmatch(message)
    if unrecognized is not None:
        for word in unrecognized.group(1).split():
            if _TOP_OPTION.fullmatch(word):
                return (
                    f" ({word} is an option of eventbus itself: put it before the command, as "
                    f"eventbus {word} {command} ...)"
                )
            if word in before and word.partition("=")[0] in known:
                return _after_the_command(word, command)
            if (hint := _plugin_flag_hint(word.partition("=")[0])) is not None:
                return hint
        return ""
    choice = _INVALID_COMMAND.fullmatch(message)
    if choice is None:
        return ""
    for word in typed:
        if word == choice.group(1):
            break
        if word.partition("=")[0] in known:
            return _after_the_command(word, command)
    return ""


def _plugin_flag_hint(flag: str) -> str | None:
    """A hint for a backend plugin's flag (`--redis-url`) typed while that plugin is not
    installed: a plugin's flags exist once it is (only argparse's "unrecognized arguments"
    was said, trial 117)."""
    from eventbus_core._install import SIBLINGS, install_command
    from eventbus_core._plugins import get_registry

    if not flag.startswith("--"):
        return None
    for backend, sibling in SIBLINGS.items():
        if flag.startswith(f"--{backend}-") and backend not in get_registry().backends:
            return (
                f" ({flag} is an option of the {backend} backend, whose plugin is not "
                f"installed: {install_command(sibling)})"
            )
    return None


def _after_the_command(word: str, command: str) -> str:
    return (
        f" ({word.partition('=')[0]} is an option of the commands, not of eventbus itself: put "
        f"it after the command, as eventbus {command} {word} ...)"
    )


_UNRECOGNIZED: Final = re.compile(r"unrecognized arguments: (.*)", re.DOTALL)
_INVALID_COMMAND: Final = re.compile(r"argument COMMAND: invalid choice: '([^']*)'.*", re.DOTALL)
# Each command's options (`--backend`, ...), filled by `build_parser()`.
_COMMAND_OPTIONS: dict[str, frozenset[str]] = {}
# The options of `eventbus` itself that a command does not also have (`-v`, `-vv`, `--verbose`).
_TOP_OPTION: Final = re.compile(r"-v+|--verbose")


# argparse's words for an option given without its value; the option as typed, first.
_MISSING_VALUE: Final = re.compile(r"argument ([^:/ ]+)(?:/[^:]+)?: expected one argument")


# An age (`--since 5m`) typed with a minus, as if counting back needed one.
_NEGATIVE_AGE: Final = re.compile(r"-\d+(?:\.\d+)?[smhd]")

# The words of the command line being parsed (`main()`'s argv, or the process's).
_typed: list[str] = []


def _value_after(flag: str) -> str | None:
    """The word typed after `flag` on the command line, if it starts with '-'."""
    words = _typed
    for i, word in enumerate(words[:-1]):
        if word == flag and words[i + 1].startswith("-"):
            return words[i + 1]
    return None


def _shown_extras(extras: list[str]) -> tuple[str, str]:
    """The words argparse did not take, for its error, and a hint: a word right after a
    `KEY=VALUE` option's value is most likely the rest of that value, split by the shell at a
    space (`--sink-opt header_authorization=Bearer TOKEN` unquoted), so it is not shown: it
    echoed the token (trial 240)."""
    shown: list[str] = []
    hidden = False
    tail: set[int] = set()  # positions in `_typed` of words taken as such a value's rest
    for word in extras:
        at = _typed.index(word) if word in _typed else -1
        # Every word of the run after the KEY=VALUE, not only the first (`sk live TOKEN`
        # showed TOKEN: trial 241).
        split = at > 0 and not word.startswith("-") and ("=" in _typed[at - 1] or at - 1 in tail)
        if split:
            tail.add(at)
        hidden = hidden or split
        shown.append("<a word not shown>" if split else word)
    if not hidden:
        return " ".join(shown), ""
    return " ".join(shown), (
        " (a word after an option's KEY=VALUE: the rest of a value with a space, split by the "
        "shell? Quote the whole of it, as --sink-opt 'KEY=two words'; it is not shown, as it "
        "may be a credential)"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = _Parser(
        prog="eventbus",
        description="Observability events for LLM proxies: inspect plugins, run the demo, "
        "and operate the pipeline.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="print the version of eventbus-core and of each installed eventbus plugin "
        "distribution, and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    _COMMAND_OPTIONS.update(
        {name: frozenset(command._option_string_actions) for name, command in sub.choices.items()}
    )
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (130 after Ctrl-C, at any point;
    143 when SIGTERM ended a command, which then ends as Ctrl-C ends it).

    Run as the `eventbus` program (`argv` None), the process ends at most `_LEFTOVER_WAIT`
    seconds after the command, even if a plugin left a thread running that would keep the
    interpreter alive (a backend's `stop()` that never returned, say).
    """
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # while the commands' modules load, before a command runs
        code = 130
    if argv is None:
        # The command has ended: a SIGTERM in the moments the process takes to exit must not
        # turn its exit status into a death by signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _end_despite_leftover_threads(code)
    return code


_LEFTOVER_WAIT: Final = 10.0


def _end_despite_leftover_threads(code: int) -> None:
    """Give threads that would keep the interpreter alive `_LEFTOVER_WAIT` seconds to end, then
    end the process with `code` regardless, saying which threads were left."""
    deadline = time.monotonic() + _LEFTOVER_WAIT
    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        # Ctrl-C while waiting for them: end now. (Not on to the check below: an interrupted
        # join() may mark a thread that is still running as ended.)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    left = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if not left:
        return
    print(
        f"eventbus: thread(s) {', '.join(left)} still running {_LEFTOVER_WAIT:g} s after the "
        "command ended (a plugin's, not eventbus's); exiting without them",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    with _sigterm_noted() as early:
        # Loading the commands takes a moment: a SIGTERM meanwhile ended the process by the
        # signal's default, where the command's own SIGTERM exit code was promised.
        parser = build_parser()
        _typed[:] = sys.argv[1:] if argv is None else list(argv)
        try:
            args, extras = parser.parse_known_args(argv)
        except StdoutFailed as failed:  # --help (or a message) that stdout did not take
            print(f"eventbus: error: {failed}", file=sys.stderr)
            return EXIT_FAILED
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0  # `eventbus --help | head`: the reader had what it wanted
        except SystemExit as ended:
            _help_written(ended)
            raise
    if early:
        return _sigterm_exit(args)
    if extras:
        # Reported by the sub-command's parser, so the usage shown is the command's own.
        commands = _subcommands(parser)
        shown, hint = _shown_extras(extras)
        (commands.get(args.command) or parser).error(f"unrecognized arguments: {shown}{hint}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    fresh = not logging.getLogger().handlers  # not a host's (a test runner's) own handlers
    logging.basicConfig(level=level, format=log_format)
    if fresh:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_NamedOnce(log_format))
    # A plugin's load failure or problem is logged, once, as a warning line like the others;
    # its PluginLoadWarning (for programs) would say it a second time.
    warnings.filterwarnings("ignore", category=PluginLoadWarning)
    for handler in logging.getLogger().handlers:
        # On the handler, so that libraries' records (httpx logs each request's URL at -vv,
        # query string and all) are scrubbed too, not only eventbus's own loggers'.
        handler.addFilter(ScrubFilter())
    # httpcore's DEBUG lines are wire traces, a response's headers as a list of byte tuples
    # (`(b'Set-Cookie', b'...')`) that no text rule reads as name and value: not shown, -vv
    # or not (httpx's own lines say what was sent and answered).
    logging.getLogger("httpcore").setLevel(logging.INFO)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    name = f"eventbus {args.command}"
    with _sigterm_as_interrupt() as terminated:
        code = _run_command(func, args, name)
    # A command that ended on SIGTERM took the Ctrl-C path (delivering what it had accepted,
    # bounded, then its summary); its exit code says which signal it was.
    return _sigterm_exit(args) if terminated and code == EXIT_INTERRUPTED else code


def _help_written(ended: SystemExit) -> None:
    """After `--help` (argparse's exit 0): make sure it reached stdout. A full disk or a closed
    stdout lost it, and the command said nothing and exited 0 (trial 253).

    Raises:
        SystemExit: 1, the failure said on stderr, when it did not.
    """
    if ended.code not in (0, None):
        return  # a usage error, said on stderr already
    try:
        if sys.stdout is None:  # closed: print() wrote nothing, without a word
            raise write_failed(None)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return  # the reader left: it had what it wanted
        except OSError as exc:
            raise write_failed(exc) from None
    except StdoutFailed as failed:
        print(f"eventbus: error: {failed}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None


def _sigterm_exit(args: argparse.Namespace) -> int:
    """The exit code of a command SIGTERM ended: its own (`sigterm_exit`, set by a command
    for which SIGTERM is the normal way to end: `dispatch`, 0), else 143."""
    code = getattr(args, "sigterm_exit", EXIT_TERMINATED)
    return code if isinstance(code, int) else EXIT_TERMINATED


@contextlib.contextmanager
def _sigterm_noted() -> Iterator[list[bool]]:
    """Within: SIGTERM is only noted (the list yielded holds True once it came)."""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: came.append(True))
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that every command ends the way Ctrl-C ends
    it: `kill`, a container stop and Kubernetes send SIGTERM, whose default (dying at once)
    would lose whatever a command had accepted and not yet handed on, and say nothing."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[list[bool]]:
    """Within: SIGTERM raises `_Terminated` in the main thread; the list yielded holds True
    once it came. (A command with its own handlers, `dispatch`, sets them over this one.)"""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield came  # signal handlers belong to the main thread; nothing to do elsewhere
        return

    def terminate(signum: int, frame: object) -> None:
        # Already ending, bounded by EVENTBUS_STOP_TIMEOUT: a SIGTERM now must not cut that
        # short and lose, uncounted and unsaid, what the ending is delivering. (SIGKILL ends
        # it at once; a second Ctrl-C still does as before.)
        ending = bool(came) or ending_now()
        came.append(True)
        if not ending:
            raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


class _NamedOnce(logging.Formatter):
    """The command line's log format, without the logger's name twice: messages written to
    read well where no logging is set up (Python's last resort prints the message alone) begin
    with "eventbus: ", which the format's own name then doubled (`WARNING eventbus: eventbus:
    ...`, trials 122, 131)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        doubled = f"{record.name}: {record.name}: "
        return text.replace(doubled, f"{record.name}: ", 1) if doubled in text else text


def _run_command(
    func: Callable[[argparse.Namespace], int], args: argparse.Namespace, name: str
) -> int:
    try:
        with guarded_stdout():
            code: int = func(args)
            sys.stdout.flush()  # what is buffered fails here, while it can still be said
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not stdout_gone():  # a socket's, not stdout's: something failed
            print(f"{name}: error: {scrub(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
            return EXIT_FAILED
        # `eventbus plugins | head`: the reader left, a normal end. Point stdout at devnull so
        # the interpreter's final flush does not fail as well.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _CONFIGURATION_ERRORS as exc:
        if isinstance(exc, SettingsError):
            exc = in_command_line_terms(exc, args)
        print(f"{name}: error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except EventBusError as exc:  # the backend did not answer, a sink failed, bad input
        if args.verbose:  # a plugin that failed to start says "rerun with -v" (trial 162)
            print(scrub(traceback.format_exc()), file=sys.stderr, end="")
        print(f"{name}: error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # Not a mistake of the user's: a bug, in eventbus or in a plugin. Say so plainly, and
        # whose: a plugin's capability that raised was reported as eventbus's (trial 152).
        if args.verbose:
            print(scrub(traceback.format_exc()), file=sys.stderr, end="")
        owner = plugin_at_fault(exc)
        print(
            f"{name}: internal error{f' in {owner}' if owner else ''}: "
            f"{type(exc).__name__}: {scrub(str(exc))}"
            + ("" if args.verbose else " (rerun with -v for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    raise SystemExit(main())
