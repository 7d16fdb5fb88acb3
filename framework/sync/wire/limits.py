"""The sizes every carrier of sync messages checks against, kept apart from the message
declarations in `protocol` so that a transport can know its cap without building every message's
construct struct (which is what importing `protocol` does)."""

from __future__ import annotations

import struct

MAX_BODY = 64 << 20  # far above any batch we build; a larger declared length is hostile
TAG_SIZE = 32  # HMAC-SHA256
HEADER = struct.Struct("<4sBBHIII")  # the envelope's 20 bytes (`protocol.Envelope` declares them)
MAX_MESSAGE = HEADER.size + MAX_BODY + TAG_SIZE  # the largest message a link must carry
