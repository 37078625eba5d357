"""Caption text normalisation used by the retrieval baselines; applied only when asked."""

from __future__ import annotations

# The baseline strips exactly these characters (docs/protocol.md); apostrophes and hyphens stay
# because they change words ("dog's", "hi-hat"). Each becomes a space, as in the baseline's
# re.sub, so "dog,cat" stays two words.
STRIPPED_CHARACTERS = ',.!?;:"'
_STRIP_TABLE = str.maketrans({c: " " for c in STRIPPED_CHARACTERS})


def normalize_caption(text: str) -> str:
    """Lower-case, turn ``, . ! ? ; : "`` into spaces and collapse whitespace to one space.

    Args:
        text: a caption.
    Returns:
        the normalised caption (possibly empty, e.g. for ``"..."``).

    Example: ``'A dog barks,  then  "woof"!'`` -> ``'a dog barks then woof'``.
    """
    return " ".join(str(text).lower().translate(_STRIP_TABLE).split())
