import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
pytest_plugins = ["pytester"]

# torch.optim imports torch._dynamo on first use. Imported inside an in-process pytester run it is dropped from
# sys.modules afterwards, and the next run's re-import fails ("Only a single TORCH_LIBRARY ..."): import it first.
import torch._dynamo  # noqa: E402,F401
