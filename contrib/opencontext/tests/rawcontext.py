"""RawContextProperties as OpenContext defines a chat-log context, written
from its field list (not from the package's copy), to validate batches
against: content_format "text" and source "chat_log" required, create_time
required, ids None when not given, extra keys ignored."""

from __future__ import annotations

import datetime
from typing import Any, Dict, Literal, Optional

from pydantic import BaseModel


class RawContextProperties(BaseModel):
    content_format: Literal["text"]
    source: Literal["chat_log"]
    create_time: datetime.datetime
    object_id: str
    content_text: str
    additional_info: Dict[str, Any]
    enable_merge: bool = True
    user_id: Optional[str] = None
    device_id: Optional[str] = None
    agent_id: Optional[str] = None
