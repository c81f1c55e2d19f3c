"""Adapters from agent frameworks' tool-approval hooks to decisions made by lanyardd.

Each submodule imports its framework, so import only the one you use:

- ``lanyard.adapters.openai_agents`` (``pip install 'lanyard[openai-agents]'``)
- ``lanyard.adapters.langchain`` (``pip install 'lanyard[langchain]'``)
- ``lanyard.adapters.pydantic_ai`` (``pip install 'lanyard[pydantic-ai]'``)
- ``lanyard.adapters.claude_agent_sdk`` (``pip install 'lanyard[claude-agent-sdk]'``)

What they share lives here and needs no framework: :class:`ToolRule` and
:func:`canonical_args`.
"""

from lanyard.adapters._tools import Rules, ToolCall, ToolRule, canonical_args

__all__ = ["Rules", "ToolCall", "ToolRule", "canonical_args"]
