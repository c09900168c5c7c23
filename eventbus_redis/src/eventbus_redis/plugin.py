"""Registers the Redis backends (entry point `redis` of group `eventbus`)."""
