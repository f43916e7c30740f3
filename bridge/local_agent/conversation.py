"""The conversation: ordered items, with the audio each one holds."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import formats
from .server_events import BETA


@dataclass
class Item:
    id: str
    type: str = "message"  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    audio: bytearray = field(default_factory=bytearray)  # user: committed input; assistant: output
    audio_format: str = formats.PCM16
    transcript: str | None = None
    client_item: dict[str, Any] | None = None  # items created by the client, echoed back as given
    # function_call items the agent makes: the function, the call's id, the arguments so far.
    name: str | None = None
    call_id: str | None = None
    arguments: str = ""

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // formats.bytes_per_ms(self.audio_format)

    @property
    def is_assistant_audio(self) -> bool:
        return self.type == "message" and self.role == "assistant" and self.client_item is None

    def render(self, dialect: str, *, with_content: bool = True) -> dict[str, Any]:
        if self.client_item is not None:
            given = copy.deepcopy(self.client_item)
            given.update(id=self.id, object="realtime.item", status=self.status)
            return given
        if self.type == "function_call":
            return {
                "id": self.id,
                "object": "realtime.item",
                "type": "function_call",
                "status": self.status,
                "name": self.name,
                "call_id": self.call_id,
                "arguments": self.arguments,
            }
        item: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [],
        }
        if self.role == "user":
            item["content"] = [{"type": "input_audio", "transcript": self.transcript}]
        elif with_content:
            part_type = "audio" if dialect == BETA else "output_audio"
            item["content"] = [{"type": part_type, "transcript": self.transcript}]
        return item


class Conversation:
    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._order: list[str] = []

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[Item]:
        return (self._items[i] for i in self._order)

    def function_call(self, call_id: object) -> Item | None:
        """The function_call item (the agent's or a client's) with this call_id, if any."""
        if not isinstance(call_id, str):
            return None
        return next((i for i in self if i.type == "function_call" and i.call_id == call_id), None)

    def get(self, item_id: object) -> Item | None:
        return self._items.get(item_id) if isinstance(item_id, str) else None

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def add(self, item: Item) -> str | None:
        """Append ``item``; returns the previous item's id, as events report it."""
        previous = self.last_id()
        self._items[item.id] = item
        self._order.append(item.id)
        return previous

    def delete(self, item_id: str) -> None:
        del self._items[item_id]
        self._order.remove(item_id)
