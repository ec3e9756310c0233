"""The role of each token in one masked view (OlmoEarth's ``MaskValue``), shared by masking, model and losses."""
from __future__ import annotations

from enum import IntEnum


class MaskValue(IntEnum):
    """What a token is for in one masked view; stored as int8 in mask arrays of the token grid's shape."""
    ONLINE_ENCODER = 0       # input to the online encoder
    TARGET_ENCODER_ONLY = 1  # seen only by the target encoder (neither input nor prediction target)
    DECODER = 2              # the predictor must predict its target embedding
    MISSING = 3              # no data at this token: never encoded, never decoded, never a target
