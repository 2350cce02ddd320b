"""edged: an edge inference daemon with few-shot heads taught from camera frames."""

__version__ = "0.1.0"
