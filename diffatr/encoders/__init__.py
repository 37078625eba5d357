"""Encoders: audio backbones (``diffatr.encoders.audio``), their weight conversion
(``diffatr.encoders.convert``) and the text encoder."""
