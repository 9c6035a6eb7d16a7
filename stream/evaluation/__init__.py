"""Offline evaluation of a replay against ground truth (`emostream evaluate`)."""
