"""One adapter per benchmark: ``load`` its public release, ``score`` answers, write ``submission``."""
