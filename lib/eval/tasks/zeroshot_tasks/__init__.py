"""Built-in zero-shot task specs, one module per task; importing this package registers them in suite order.

A new task is one module here (a `ZeroShotTask` passed to `lib.eval.tasks.zeroshot_registry.register`) and one
import line below.
"""

from lib.eval.tasks.zeroshot_tasks import (boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge,  # noqa: F401, I001
                                          openbookqa, piqa)
