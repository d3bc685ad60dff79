"""The arms of scripts/compare-transfer.sh, shared by the scripts that tabulate them
(transfer-tables.py, transfer-pool.py). Standard library only."""

# The three stage-2 arms of every seed, and the optional fourth (compare-transfer.sh --inherit).
ARMS = ["weights", "arch", "scratch"]
LABELS = {"weights": "transfer + weights", "arch": "transfer (architecture)", "scratch": "from scratch",
          "inherit": "weights + inheritance"}
# The paired differences reported between the three arms.
PAIRS = [("weights", "scratch"), ("arch", "scratch"), ("weights", "arch")]
