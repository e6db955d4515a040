"""an2dl-kit: from a clean checkout to a scored AN2DL leaderboard submission."""

__version__ = "0.1.0"
