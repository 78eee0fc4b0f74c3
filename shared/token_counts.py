"""Token counts the same across API families, as the records and metrics take them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenCounts:
    """One upstream round's token counts, or the sum of several rounds'. ``input`` excludes cached tokens, as
    Anthropic's ``input_tokens`` does (chat completions' ``prompt_tokens`` include them: subtract, clamp at
    0); ``cache_read`` and ``cache_write`` are the prompt tokens read from and written to the provider's
    cache; ``extra``, any other count the provider reports (e.g. ``reasoning_tokens``), by name."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            extra=dict(Counter(self.extra) + Counter(other.extra)),
        )
