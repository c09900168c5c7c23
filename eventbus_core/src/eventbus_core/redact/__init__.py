"""Redaction: secrets masked in events and payloads before anything leaves the process."""
