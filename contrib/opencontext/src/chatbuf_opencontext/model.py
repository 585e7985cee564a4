"""RawContextProperties: OpenContext's when it is installed, else a copy.

The copy has the fields of OpenContext's chat-log context
(opencontext.models.context.RawContextProperties) with the same types and
defaults; extra keys in a batch are ignored, as pydantic does by default.
"""

from __future__ import annotations

import datetime
import importlib.util
import uuid
from enum import Enum
from typing import Any, Dict, Optional, Type

from pydantic import BaseModel, Field


class ContentFormat(str, Enum):
    TEXT = "text"
    IMAGE = "image"
    FILE = "file"


class ContextSource(str, Enum):
    SCREENSHOT = "screenshot"
    VAULT = "vault"
    LOCAL_FILE = "local_file"
    WEB_LINK = "web_link"
    INPUT = "input"
    CHAT_LOG = "chat_log"


class RawContextProperties(BaseModel):
    """The bundled copy of OpenContext's RawContextProperties."""

    content_format: ContentFormat
    source: ContextSource
    create_time: datetime.datetime
    object_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    content_path: Optional[str] = None
    content_type: Optional[str] = None
    content_text: Optional[str] = None
    filter_path: Optional[str] = None
    additional_info: Optional[Dict[str, Any]] = None
    enable_merge: bool = True
    user_id: Optional[str] = None
    device_id: Optional[str] = None
    agent_id: Optional[str] = None


def default_model() -> Type[BaseModel]:
    """OpenContext's RawContextProperties when opencontext is installed, else the copy.

    An installed opencontext that fails to import raises: a silent fallback to
    the copy would hide it.
    """
    if importlib.util.find_spec("opencontext") is None:
        return RawContextProperties
    from opencontext.models.context import RawContextProperties as theirs  # type: ignore

    return theirs
