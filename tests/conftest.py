import sys
from pathlib import Path

# Test helpers (references) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
