"""Training recipe for the gacflow codec (needs torch): corpus, losses, loop, checkpoints."""
