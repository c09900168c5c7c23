"""The dispatcher: sources -> transform -> redact -> per-sink workers with retries and dead letters.

The public names (`Dispatcher`, `DispatcherStats`, ...) are exported by `eventbus_core`."""
