"""The private machinery of `eventbus demo`."""
