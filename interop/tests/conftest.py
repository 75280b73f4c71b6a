import sys
from pathlib import Path

# The tests share hf_models.py with make_goldens.py; interop/ is not a package.
INTEROP = Path(__file__).resolve().parent.parent
if str(INTEROP) not in sys.path:
    sys.path.insert(0, str(INTEROP))
