"""The perplexity tasks: WikiText-2 and C4, Wanda's protocol (lib.eval.perplexity) on their evaluation text.

What the text is (WikiText-2's test split joined with blank lines; C4's first 1100 validation documents,
cut to 256 windows) is the data registry's (lib.data.builtin); these tasks only declare how the report reads.
"""

from lib.eval.tasks.task import Task, perplexity_metrics, register

WIKITEXT2 = register(Task("wikitext2", "WikiText2", "perplexity", "wikitext2", perplexity_metrics("WikiText2")))
C4 = register(Task("c4", "C4", "perplexity", "c4", perplexity_metrics("C4")))
