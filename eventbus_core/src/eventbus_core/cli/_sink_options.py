"""`--sink-opt KEY=VALUE`, as `dispatch` and `replay` read it: keys in lower case, as the
`EVENTBUS_SINK_<NAME>_<KEY>` variables are read, and a key given twice refused (the last won
without a word, trial 190, as `--backend-option` refuses the same mistake)."""

from __future__ import annotations

__all__ = ["SinkOptions"]


class SinkOptions:
    """The `--sink-opt` pairs of one sink.

    Args:
        sink: The sink's name as typed after `--sink`, for the errors (None: not known yet).
    """

    def __init__(self, sink: str | None = None) -> None:
        self.sink = sink
        self.options: dict[str, str] = {}
        """Lower-cased key to value: what the sink's factory gets."""
        self._typed: dict[str, str] = {}

    def add(self, pair: str) -> None:
        """Add one `KEY=VALUE`.

        Raises:
            ValueError: it is not `KEY=VALUE`, or its key was given before (in any case); the
                message names what was typed.
        """
        key, sep, value = pair.partition("=")
        typed = key.strip()
        if not sep or not typed:
            raise ValueError(f"--sink-opt {pair!r}: write it as KEY=VALUE, e.g. path=events.jsonl")
        name = typed.lower()
        before = self._typed.get(name)
        if before is not None:
            whose = f" for --sink {self.sink}" if self.sink else ""
            spelt = f", as {before} and as {typed}" if before != typed else ""
            raise ValueError(f"--sink-opt gives {typed} twice{whose}{spelt}: give it once")
        self._typed[name] = typed
        self.options[name] = value
