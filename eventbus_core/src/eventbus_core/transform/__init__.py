"""The transformer: an `Event` turned into the payload observability tools understand."""
