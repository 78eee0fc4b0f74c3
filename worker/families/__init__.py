"""The API families' codecs, by family: what worker/jobs.py runs the tool loop with."""

from __future__ import annotations

from shared.families import Family
from worker.codec import CodecFactory
from worker.families.anthropic_messages import AnthropicMessagesCodec
from worker.families.openai_chat import ChatCodec
from worker.families.openai_responses import ResponsesCodec

CODECS: dict[Family, CodecFactory] = {
    Family.OPENAI_CHAT: ChatCodec,
    Family.ANTHROPIC_MESSAGES: AnthropicMessagesCodec,
    Family.OPENAI_RESPONSES: ResponsesCodec,
}
