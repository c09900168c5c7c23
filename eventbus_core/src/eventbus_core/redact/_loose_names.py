"""Credential names as configuration figures and HTTP headers spell them: looser than a
payload's field names (`redact._redact._is_secret_name`), where `token` is the text of a
logprob and `key` a cache key. A configuration field or a header named with one of these words
(`nats_token`, `authToken`, `X-Custom-Token`, `Helicone-Auth`, `X-Hub-Signature`) or word pairs
(`signing_key`, `X-Client-Key`) holds a credential."""

from __future__ import annotations

import functools
import itertools
import re
from typing import Final

__all__ = ["names_a_credential_loosely", "pairs_into_a_credential"]

_WORDS_OF_A_CREDENTIAL: Final = frozenset(
    {
        "token",
        "credential",
        "credentials",
        "pwd",
        "pass",
        "passwd",
        "bearer",
        "creds",
        "jwt",
        "nkey",
        "auth",
        "dsn",
        "passcode",
        "sessionid",
        "otp",
        "signature",
    }
)
# Two words that together name a credential, where one alone does not (`key`: a Redis key).
_PAIRS_OF_A_CREDENTIAL: Final = frozenset(
    {
        ("signing", "key"),
        ("session", "key"),
        ("encryption", "key"),
        ("master", "key"),
        ("shared", "key"),
        ("connection", "string"),
        ("conn", "str"),
        ("cert", "key"),
        ("account", "key"),
        ("storage", "key"),
        ("hmac", "key"),
        ("tls", "key"),
        ("client", "key"),
        ("ssl", "key"),
        ("primary", "key"),
        ("secondary", "key"),
        ("sas", "key"),
        ("consumer", "key"),
        ("app", "key"),
        ("license", "key"),
        # A session id is a credential: whoever has it is logged in (the query rules mask
        # `session_id=`; `X-Sessionid` was masked where `X-Session-Id` was not, trial 266).
        ("session", "id"),
    }
    # An LLM provider's key under a name of the application's own (`X-Openai-Key`,
    # `anthropic_key`): where a key of another shape than the value patterns know passed
    # (trial 266).
    | {
        (provider, "key")
        for provider in (
            "openai",
            "anthropic",
            "azure",
            "google",
            "gemini",
            "mistral",
            "cohere",
            "groq",
            "deepseek",
            "perplexity",
            "fireworks",
            "together",
            "openrouter",
            "xai",
            "huggingface",
            "hf",
            "replicate",
            "voyage",
            "bedrock",
            "vertex",
            "helicone",
            "lunary",
            "langfuse",
            "portkey",
            "provider",
            "llm",
        )
    }
)
_WORDS: Final = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=4096)
def names_a_credential_loosely(name: str) -> bool:
    """Whether `name`'s words (split at separators and camelCase humps) include one of
    `_WORDS_OF_A_CREDENTIAL`, or two in a row make one of `_PAIRS_OF_A_CREDENTIAL`."""
    words = [word.lower() for word in _WORDS.findall(name)]
    return any(word in _WORDS_OF_A_CREDENTIAL for word in words) or any(
        pair in _PAIRS_OF_A_CREDENTIAL for pair in itertools.pairwise(words)
    )


def pairs_into_a_credential(first: str, second: str) -> bool:
    """Whether two words in a row (lower case) together name a credential (`client`, `key`)."""
    return (first, second) in _PAIRS_OF_A_CREDENTIAL
