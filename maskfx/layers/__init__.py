"""Building blocks that several techniques' layers share."""
