"""emostream's classifier: late fusion of a text encoder and an audio encoder over the 7 MELD emotions."""

__version__ = "0.1.0"
