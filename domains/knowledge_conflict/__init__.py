"""Knowledge conflict: prompts whose passage contradicts what the model memorised (NQ-Swap format).

samples: ``data`` (NQ-Swap/Macnoise loaders) and ``probe_set`` (built-in offline facts) rendered by
``prompts``; concepts: conflict vs no conflict per prompt; behaviour: ``behaviour`` (context, memory
or neither answer by normalised exact match, ``answers``); ``memorised`` keeps known facts only;
``analysis`` probes per layer and site; ``case_study`` runs the whole study.
"""
