"""`gacflow eval`: score the codec against Codec 2 and Opus anchors on the same clips.

Torch is imported here only through `gacflow.model` (our decoder) and the optional metric
packages, so this package lives outside the NumPy-only sdk.
"""
